import type { Redis } from 'ioredis';
import { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { KeyLayout } from './keys';
import type { WriteSink } from './write-ops';
import { fromBytes, type Encoded } from '../wire/encoded';

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

export function encodeRecord(state: Evaluation): Buffer {
  return Buffer.from(Evaluation.encode(state).finish());
}

export function decodeRecord(bytes: Buffer): Evaluation {
  return Evaluation.decode(bytes);
}

/** How the record is read: its bytes, served as they are, and the state decoded when asked for. */
export interface EvaluationRecords {
  get(evalId: string): Promise<Encoded<Evaluation> | undefined>;
  /** Records of one partition's evaluations, in the order asked (undefined where missing). */
  getMany(partition: number, evalIds: readonly string[]): Promise<(Encoded<Evaluation> | undefined)[]>;
}

export function createEvaluationRecords(redis: Redis, layout: KeyLayout): EvaluationRecords {
  return {
    async get(evalId) {
      const bytes = await redis.getBuffer(layout.record(layout.partitionOf(evalId), evalId));
      return bytes === null ? undefined : fromBytes(Evaluation, bytes);
    },
    async getMany(partition, evalIds) {
      if (evalIds.length === 0) return [];
      // One MGET per partition: its keys share a hash slot.
      const values = await redis.mgetBuffer(...evalIds.map((id) => layout.record(partition, id)));
      return values.map((bytes) => (bytes === null ? undefined : fromBytes(Evaluation, bytes)));
    },
  };
}
