import { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { KeyLayout } from './keys';
import type { WriteSink } from './write-ops';
import type { Encoded } from '../wire/encoded';

/**
 * Read model: one record per evaluation, its current state as ts-proto-encoded `Evaluation`
 * bytes (served by GetEvaluation and ListEvaluations without any transformation but a decode).
 *
 * How an event changes it: the record is replaced by the state after the event (only the
 * last state of a batch is written). `encoded` is `encodeRecord(state)` when the caller has it.
 */
export function recordWrites(
  layout: KeyLayout,
  partition: number,
  state: Evaluation,
  out: WriteSink,
  encoded: Buffer = encodeRecord(state),
): void {
  out.set(layout.record(partition, state.evalId), encoded);
}

function encodeRecord(state: Evaluation): Buffer {
  return Buffer.from(Evaluation.encode(state).finish());
}

export function decodeRecord(bytes: Buffer): Evaluation {
  return Evaluation.decode(bytes);
}

/** How the record is read: its bytes, served as they are, and the state decoded when asked for. */
export interface EvaluationRecords {
  /**
   * The record (undefined when there is none) and its partition's checkpoint, read in one
   * command (the two keys share a slot): the read guard checks the one against the other.
   */
  get(evalId: string): Promise<{ readonly record: Encoded<Evaluation> | undefined; readonly checkpoint: bigint }>;
  /** Records of one partition's evaluations, in the order asked (undefined where missing). */
  getMany(partition: number, evalIds: readonly string[]): Promise<(Encoded<Evaluation> | undefined)[]>;
}
