import { evolve, type RecordedEvent } from '../../../shared/domain';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { Logger } from '../../../shared/logging';
import type { KeyLayout } from '../read-models/keys';
import type { PartitionWrite } from '../read-models/write-ops';
import type { EventLog } from './event-log';
import { FoldError, planBatch, type PartitionSnapshot } from './plan';

/** Where the projection keeps the read models (Redis: redis/projection-store.ts). */
export interface ProjectionStore {
  /**
   * Every partition's checkpoint with the states of the given evaluations, each partition read
   * atomically (its states are exactly those its checkpoint covers). All partitions in one
   * round trip.
   */
  load(evalIdsByPartition: ReadonlyMap<number, readonly string[]>): Promise<PartitionSnapshot[]>;
  /**
   * Applies each write atomically if its partition still has the expected checkpoint. Returns,
   * per write, true or the checkpoint found instead (another replica got there first).
   */
  write(writes: readonly PartitionWrite[]): Promise<(true | bigint)[]>;
}

export interface ApplyResult {
  /** Events this call applied (0 when another replica had applied them all). */
  readonly applied: number;
  /** The lowest partition checkpoint after the call. */
  readonly checkpoint: bigint;
  readonly partitionCheckpoints: readonly bigint[];
}

export interface ProjectionApplier {
  /**
   * Applies consecutive events: reads the partitions' checkpoints and states (one round trip),
   * folds in memory, writes each partition with one atomic compare-and-set script, and retries
   * from a fresh read when another replica moved a checkpoint first. Events at or below a
   * partition's checkpoint are ignored. Throws GapError when the events start beyond the
   * lowest checkpoint + 1.
   */
  apply(events: readonly RecordedEvent[]): Promise<ApplyResult>;
}

const MAX_ATTEMPTS = 20;

export function createProjectionApplier(deps: {
  readonly store: ProjectionStore;
  readonly eventLog: EventLog;
  readonly layout: KeyLayout;
  readonly logger: Logger;
}): ProjectionApplier {
  const { store, eventLog, layout, logger } = deps;

  /** The state an evaluation must have at `checkpoint`, folded from the log (repairs only). */
  async function foldFromLog(evalId: string, checkpoint: bigint): Promise<Evaluation | undefined> {
    let state: Evaluation | undefined;
    for (const event of await eventLog.eventsOf(evalId, checkpoint)) state = evolve(state, event);
    return state;
  }

  return {
    async apply(events) {
      const idsByPartition = evalIdsByPartition(events, layout);
      // States repaired from the log, valid for the checkpoint they were folded at.
      const repairs = new Map<string, { checkpoint: bigint; state: Evaluation | undefined }>();
      let applied = 0;
      for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt += 1) {
        const loaded = await store.load(idsByPartition);
        const snapshots = loaded.map((snapshot, partition) => {
          let states: Map<string, Evaluation> | undefined;
          for (const [evalId, repair] of repairs) {
            if (layout.partitionOf(evalId) !== partition || repair.checkpoint !== snapshot.checkpoint) continue;
            states ??= new Map(snapshot.states);
            if (repair.state === undefined) states.delete(evalId);
            else states.set(evalId, repair.state);
          }
          return states === undefined ? snapshot : { checkpoint: snapshot.checkpoint, states };
        });
        let plan;
        try {
          plan = planBatch(events, snapshots, layout);
        } catch (err) {
          if (!(err instanceof FoldError)) throw err;
          const known = repairs.get(err.evalId);
          if (known !== undefined && known.checkpoint === err.checkpoint) throw err; // the log itself does not fold
          // The read model disagrees with the log (e.g. keys were deleted by hand, or a rebuild
          // is running): take the evaluation's state from the source of truth and go on.
          logger.warn('read model state disagrees with the event log; repairing it from the log', {
            evalId: err.evalId,
            partition: err.partition,
            checkpoint: err.checkpoint.toString(),
            reason: err.message,
          });
          repairs.set(err.evalId, { checkpoint: err.checkpoint, state: await foldFromLog(err.evalId, err.checkpoint) });
          continue;
        }
        const checkpoints = snapshots.map((s) => s.checkpoint);
        if (plan.writes.length === 0)
          return { applied, checkpoint: min(checkpoints), partitionCheckpoints: checkpoints };
        const results = await store.write(plan.writes);
        let conflicted = false;
        results.forEach((result, i) => {
          const write = plan.writes[i] as PartitionWrite;
          if (result === true) {
            applied += plan.eventsPerPartition.get(write.partition) ?? 0;
            checkpoints[write.partition] = write.newCheckpoint;
          } else {
            conflicted = true;
            checkpoints[write.partition] = result;
          }
        });
        if (!conflicted) return { applied, checkpoint: min(checkpoints), partitionCheckpoints: checkpoints };
        logger.debug('another replica moved a checkpoint first; re-reading', { attempt });
      }
      throw new Error(`projection step kept conflicting after ${MAX_ATTEMPTS} attempts`);
    },
  };
}

/** The distinct evaluations of `events`, per partition, in order of first appearance. */
export function evalIdsByPartition(
  events: readonly RecordedEvent[],
  layout: Pick<KeyLayout, 'partitionOf'>,
): Map<number, string[]> {
  const seen = new Set<string>();
  const idsByPartition = new Map<number, string[]>();
  for (const { evalId } of events) {
    if (seen.has(evalId)) continue;
    seen.add(evalId);
    const p = layout.partitionOf(evalId);
    const ids = idsByPartition.get(p);
    if (ids === undefined) idsByPartition.set(p, [evalId]);
    else ids.push(evalId);
  }
  return idsByPartition;
}

function min(values: readonly bigint[]): bigint {
  return values.reduce((m, v) => (v < m ? v : m), values[0] ?? 0n);
}
