import { evolve, type RecordedEvent } from '../../../shared/domain';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { Logger } from '../../../shared/logging';
import type { KeyLayout } from '../read-models/keys';
import type { PartitionWrite } from '../read-models/write-ops';
import type { EventLog } from './event-log';
import { FoldError, planBatch, planRepair, planSkip, type PartitionSnapshot } from './plan';

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
   * per write, true or the checkpoint found instead (another replica got there first). Throws
   * FencedError (redis/apply-script.ts) while a rebuild holds a partition, unless
   * `fenceToken` is the rebuild's own.
   */
  write(writes: readonly PartitionWrite[], fenceToken?: string): Promise<(true | bigint)[]>;
}

export interface ApplyResult {
  /** Events this call applied (0 when another replica had applied them all). */
  readonly applied: number;
  /** The lowest partition checkpoint after the call. */
  readonly checkpoint: bigint;
  readonly partitionCheckpoints: readonly bigint[];
  /** Evaluations whose stored state disagreed with the log, taken from the log instead. */
  readonly fromLog: number;
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
  /**
   * Puts the read models of evaluations a read found lost back as the log has them at their
   * partition's checkpoint (planRepair), retrying when a step moves the checkpoint meanwhile.
   * Returns how many evaluations were rewritten (those with no event up to the checkpoint
   * have nothing to repair).
   */
  repair(evalIds: readonly string[]): Promise<number>;
  /**
   * Moves every partition checkpoint below `horizon` up to it, writing nothing else: the events
   * at or below the log's horizon left it (retention), and read models starting from nothing
   * start there. A partition another replica moved first is left as it is.
   */
  skipTo(horizon: bigint): Promise<void>;
}

/**
 * Attempts of one step: each is a conflict with another replica, or one repair of every state
 * the batch found wrong. Past them the step fails and the projector retries it with backoff.
 */
const MAX_ATTEMPTS = 20;

/** A state taken from the log, valid while its partition is still at `checkpoint`. */
interface Repair {
  readonly checkpoint: bigint;
  readonly state: Evaluation | undefined;
}

export function createProjectionApplier(deps: {
  readonly store: ProjectionStore;
  readonly eventLog: EventLog;
  readonly layout: KeyLayout;
  readonly logger: Logger;
  /**
   * States the read models do not hold (past HOT_RETENTION: read-models/hot-retention.ts): a
   * repair leaves them out, so that a record the sweep took out is not written back.
   */
  readonly keepsOut?: (state: Evaluation) => boolean;
}): ProjectionApplier {
  const { store, eventLog, layout, logger, keepsOut } = deps;

  /** The events of the evaluations whose state at the end of them the read models hold. */
  function heldOnly(events: readonly RecordedEvent[]): readonly RecordedEvent[] {
    if (keepsOut === undefined) return events;
    const states = new Map<string, Evaluation>();
    for (const event of events) states.set(event.evalId, evolve(states.get(event.evalId), event));
    const out = new Set([...states.values()].filter(keepsOut).map((state) => state.evalId));
    return out.size === 0 ? events : events.filter((event) => !out.has(event.evalId));
  }

  /** The states the evaluations must have at `checkpoint`, folded from the log (repairs only). */
  async function foldFromLog(evalIds: readonly string[], checkpoint: bigint): Promise<Map<string, Evaluation>> {
    const states = new Map<string, Evaluation>();
    for (const event of await eventLog.eventsOf(evalIds, checkpoint))
      states.set(event.evalId, evolve(states.get(event.evalId), event));
    return states;
  }

  /**
   * Takes the states of every evaluation `err` names from the log, at the checkpoint each was
   * read at. Throws `err` when a state repaired at that checkpoint still does not fold: then
   * the log itself does not (a bug, not lost keys).
   */
  async function repair(err: FoldError, repairs: Map<string, Repair>): Promise<void> {
    const byCheckpoint = new Map<bigint, string[]>();
    for (const { evalId, checkpoint } of err.failures) {
      if (repairs.get(evalId)?.checkpoint === checkpoint) throw err;
      const ids = byCheckpoint.get(checkpoint);
      if (ids === undefined) byCheckpoint.set(checkpoint, [evalId]);
      else ids.push(evalId);
    }
    const [first] = err.failures;
    // The read models disagree with the log (keys deleted or lost, a checkpoint gone, a rebuild
    // running): one line for the lot, not one per evaluation.
    logger.warn('read model states disagree with the event log; repairing them from the log', {
      evaluations: err.failures.length,
      first: first?.evalId,
      partition: first?.partition,
      checkpoint: first?.checkpoint.toString(),
      reason: first?.reason,
    });
    for (const [checkpoint, evalIds] of byCheckpoint) {
      const states = await foldFromLog(evalIds, checkpoint);
      for (const evalId of evalIds) repairs.set(evalId, { checkpoint, state: states.get(evalId) });
    }
  }

  return {
    async skipTo(horizon) {
      const snapshots = await store.load(new Map());
      const writes = planSkip(
        snapshots.map((s) => s.checkpoint),
        horizon,
        layout,
      );
      if (writes.length > 0) await store.write(writes);
    },
    async apply(events) {
      const idsByPartition = evalIdsByPartition(events, layout);
      // States repaired from the log, valid for the checkpoint they were folded at.
      const repairs = new Map<string, Repair>();
      let applied = 0;
      for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt += 1) {
        const loaded = await store.load(idsByPartition);
        const snapshots = loaded.map((snapshot, partition): PartitionSnapshot => {
          // Made only for a partition with repairs: most steps have none.
          let repaired: { states: Map<string, Evaluation>; fromLog: Set<string> } | undefined;
          for (const [evalId, repair] of repairs) {
            if (layout.partitionOf(evalId) !== partition || repair.checkpoint !== snapshot.checkpoint) continue;
            repaired ??= { states: new Map(snapshot.states), fromLog: new Set() };
            if (repair.state === undefined) repaired.states.delete(evalId);
            else repaired.states.set(evalId, repair.state);
            repaired.fromLog.add(evalId);
          }
          return repaired === undefined ? snapshot : { checkpoint: snapshot.checkpoint, ...repaired };
        });
        let plan;
        try {
          plan = planBatch(events, snapshots, layout);
        } catch (err) {
          if (!(err instanceof FoldError)) throw err;
          await repair(err, repairs);
          continue;
        }
        const checkpoints = snapshots.map((s) => s.checkpoint);
        if (plan.writes.length === 0)
          return { applied, checkpoint: min(checkpoints), partitionCheckpoints: checkpoints, fromLog: repairs.size };
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
        if (!conflicted)
          return { applied, checkpoint: min(checkpoints), partitionCheckpoints: checkpoints, fromLog: repairs.size };
        logger.debug('another replica moved a checkpoint first; re-reading', { attempt });
      }
      throw new Error(`projection step kept conflicting after ${MAX_ATTEMPTS} attempts`);
    },
    async repair(evalIds) {
      let pending = evalIdsByPartition(
        evalIds.map((evalId) => ({ evalId })),
        layout,
      );
      let repaired = 0;
      for (let attempt = 1; attempt <= MAX_ATTEMPTS && pending.size > 0; attempt += 1) {
        const snapshots = await store.load(new Map());
        const writes = await Promise.all(
          [...pending].map(async ([partition, ids]) => {
            const checkpoint = snapshots[partition]?.checkpoint ?? 0n;
            const events = heldOnly(await eventLog.eventsOf(ids, checkpoint));
            return {
              ids,
              evaluations: new Set(events.map((e) => e.evalId)).size,
              write: planRepair(events, partition, checkpoint, layout),
            };
          }),
        );
        const results = await store.write(writes.map((w) => w.write));
        const retry = new Map<number, string[]>();
        results.forEach((result, i) => {
          const { ids, evaluations, write } = writes[i] as (typeof writes)[number];
          if (result === true) repaired += evaluations;
          else retry.set(write.partition, ids);
        });
        pending = retry;
      }
      if (pending.size > 0) throw new Error(`repair kept conflicting after ${MAX_ATTEMPTS} attempts`);
      return repaired;
    },
  };
}

/** The distinct evaluations of `events`, per partition, in order of first appearance. */
export function evalIdsByPartition(
  events: readonly Pick<RecordedEvent, 'evalId'>[],
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
