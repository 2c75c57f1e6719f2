import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { KeyLayout } from './keys';
import type { WriteSink } from './write-ops';
import type { Encoded } from '../wire/encoded';

/**
 * Read model: every update of one evaluation, in revision order (list index = revision - 1).
 * WatchEvaluation replays it to a client resuming from `after_revision`, and its last entry is
 * the "current state" message (the update carries the event type the record lacks).
 *
 * How an event changes it: the update is appended.
 */
export function historyWrites(
  layout: KeyLayout,
  partition: number,
  evalId: string,
  update: Buffer,
  out: WriteSink,
): void {
  out.rpush(layout.history(partition, evalId), update);
}

export interface EvaluationHistory {
  /** The latest update (the current state), or undefined when the evaluation is unknown. */
  latest(evalId: string): Promise<Encoded<EvaluationUpdate> | undefined>;
  /** Every update with a revision above `revision`, oldest first. */
  after(evalId: string, revision: bigint): Promise<Encoded<EvaluationUpdate>[]>;
}
