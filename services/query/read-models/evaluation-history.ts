import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { KeyLayout } from './keys';
import type { WriteSink } from './write-ops';
import type { Encoded } from '../wire/encoded';

/**
 * Read model: every update of one evaluation, in revision order (list index = revision - 1).
 * WatchEvaluation replays it to a client resuming from `after_revision`, and its last entry is
 * the "current state" message (the update carries the event type the record lacks).
 *
 * How an event changes it: the update is put at index revision - 1, replacing that entry and
 * any after it if they are there already (an event applied again after a lost checkpoint, or a
 * repair folding the evaluation from the log) — never appended twice.
 */
export function historyWrites(
  layout: KeyLayout,
  partition: number,
  evalId: string,
  revision: string,
  update: Buffer,
  out: WriteSink,
): void {
  out.putAt(layout.history(partition, evalId), Number(revision) - 1, update);
}

export interface EvaluationHistory {
  /**
   * The latest update (the current state) and how many entries the history holds (read
   * after it), or undefined when the evaluation is unknown. UnavailableError when no client
   * could decode it (an older one is not the current state).
   */
  latest(evalId: string): Promise<{ readonly update: Encoded<EvaluationUpdate>; readonly length: bigint } | undefined>;
  /** Every update with a revision above `revision`, oldest first, but those no client could decode. */
  after(evalId: string, revision: bigint): Promise<Encoded<EvaluationUpdate>[]>;
}
