import { UnavailableError } from '../../../shared/errors';
import type { Logger } from '../../../shared/logging';

/** What the guard needs of the projector: what this replica applied, and its repair hooks. */
export interface GuardedProjection {
  status(): { readonly checkpoint: bigint; readonly stalled: string | undefined };
  requestCatchUp(reason: string): void;
  repair(evalIds: readonly string[]): void;
}

/** Where an evaluation first appears in the log (PostgreSQL), if it does at all. */
export type FirstPositionOf = (evalId: string) => Promise<bigint | undefined>;

/** See ReadGuard.beforeRead. */
export type FreshnessCheck = (checkpoint: bigint, minPosition?: bigint) => void;

export interface ReadGuard {
  /**
   * Before a `min_position` wait: throws UNAVAILABLE at once when the read models are behind
   * `minPosition` and cannot move (Redis refuses writes), instead of letting the call wait out
   * its deadline for a position that will not come.
   */
  checkReachable(minPosition: bigint): void;
  /**
   * Called just before a read is sent; the check it returns throws UNAVAILABLE unless the
   * read's partition `checkpoint` (read in the same round trip as the data, after it) is at
   * least what this replica had applied when the read was sent: a lower one means Redis lost
   * data (flushed, restarted empty, the key deleted) since, and whatever the read found cannot
   * be trusted. A catch-up is asked for. (What was applied after the read was sent is no
   * measure: a step landing between the read and the check is not a loss.)
   *
   * With `minPosition` (the read waited for it), also unless the checkpoint reached it: the wait
   * may pass on what the tail saw before Redis lost data, while a replica replaying into the
   * emptied Redis has its applied position back at the checkpoint (so the first check passes),
   * and the read would answer an older state, or NOT_FOUND, for what the client wrote. With
   * several partitions, a partition none of whose evaluations a step changed gets its
   * checkpoint a moment after the others: a read racing that is refused too, and its retry
   * answers.
   */
  beforeRead(): FreshnessCheck;
  /**
   * Before answering NOT_FOUND for `evalId` at `checkpoint`: when the log has the evaluation
   * at or below that checkpoint, its read model was lost (deleted, evicted) — a repair is
   * asked for and the call gets UNAVAILABLE instead of a wrong NOT_FOUND.
   */
  confirmMissing(evalId: string, checkpoint: bigint): Promise<void>;
  /**
   * Evaluations a read found damaged for certain (an index entry without its record, a
   * history shorter than its revisions or older than the record): repair, UNAVAILABLE.
   */
  reportLost(evalIds: readonly string[]): void;
  /**
   * Partitions a list found with an index that differs from its count (redis/index-counts.ts):
   * the indexes are checked and repaired, UNAVAILABLE.
   */
  reportDamagedIndexes(partitions: readonly number[]): void;
}

/**
 * The query side's last line against answering wrong from a Redis that lost data between two
 * catch-ups (the projector notices such a loss only on its next step).
 *
 * A NOT_FOUND costs one indexed PostgreSQL lookup: it is the one answer an empty Redis gives
 * for everything, and it is rare otherwise (an id read before its submit was projected).
 */
export function createReadGuard(deps: {
  readonly projection: GuardedProjection;
  readonly firstPositionOf: FirstPositionOf;
  /** Asks for the indexes to be checked and repaired (redis/index-counts.ts `keepIndexes`). */
  readonly checkIndexes: () => void;
  readonly logger: Logger;
}): ReadGuard {
  const { projection, firstPositionOf, logger } = deps;
  return {
    checkReachable(minPosition) {
      const { checkpoint, stalled } = projection.status();
      if (stalled === undefined || minPosition <= checkpoint) return;
      throw new UnavailableError(
        `min_position ${minPosition} is beyond the read models (at ${checkpoint}), which cannot move: ${stalled}`,
      );
    },
    beforeRead: () => {
      const applied = projection.status().checkpoint;
      return (checkpoint, minPosition) => {
        if (checkpoint < applied) {
          projection.requestCatchUp('a read found the read models behind what was applied');
          throw new UnavailableError(
            `the read models are at position ${checkpoint}, behind the ${applied} this replica applied ` +
              '(Redis lost data): they are being rebuilt from the event log; retry shortly',
          );
        }
        if (minPosition !== undefined && checkpoint < minPosition)
          throw new UnavailableError(
            `the read models are at position ${checkpoint}, behind the min_position ${minPosition} this read ` +
              'waited for (Redis lost data, or a partition is a moment behind another): retry shortly',
          );
      };
    },
    async confirmMissing(evalId, checkpoint) {
      const first = await firstPositionOf(evalId);
      if (first === undefined || first > checkpoint) return;
      logger.warn('an evaluation the log has was missing from the read models; repairing it', {
        evalId,
        firstPosition: first.toString(),
        checkpoint: checkpoint.toString(),
      });
      projection.repair([evalId]);
      throw new UnavailableError(
        `the read model of evaluation ${evalId} was lost and is being rewritten from the event log; retry shortly`,
      );
    },
    reportLost(evalIds) {
      if (evalIds.length === 0) return;
      logger.warn('read models found damaged by a read; repairing them', {
        evaluations: evalIds.length,
        first: evalIds[0],
      });
      projection.repair(evalIds);
      throw new UnavailableError(
        `the read models of ${evalIds.length} evaluation(s), first ${evalIds[0]}, lost keys and are being ` +
          'rewritten from the event log; retry shortly',
      );
    },
    reportDamagedIndexes(partitions) {
      if (partitions.length === 0) return;
      deps.checkIndexes();
      throw new UnavailableError(
        `the indexes of partition(s) ${partitions.join(', ')} lost members (or are not yet built, after an upgrade or a new INDEXED_METADATA_KEYS) and are being rewritten from the records; retry shortly`,
      );
    },
  };
}
