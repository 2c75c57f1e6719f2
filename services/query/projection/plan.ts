import { evolve, EVENT_TYPE_TO_PROTO, ProjectionError, type RecordedEvent } from '../../../shared/domain';
import { EvaluationUpdate, type Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { changeLogWrites } from '../read-models/change-log';
import { historyWrites } from '../read-models/evaluation-history';
import { indexWrites } from '../read-models/evaluation-list';
import { recordWrites } from '../read-models/evaluation-record';
import type { KeyLayout } from '../read-models/keys';
import type { PartitionWrite, WriteOp } from '../read-models/write-ops';

/** What one partition holds before a projection step: its checkpoint and the batch's states. */
export interface PartitionSnapshot {
  readonly checkpoint: bigint;
  /** States of the batch's evaluations that live in this partition; absent = unknown. */
  readonly states: ReadonlyMap<string, Evaluation>;
}

/** The batch does not start right after the lowest partition checkpoint: read from the log. */
export class GapError extends Error {
  override name = 'GapError';
  constructor(
    readonly firstPosition: bigint,
    readonly checkpoint: bigint,
  ) {
    super(`batch starts at position ${firstPosition} but the read models are at ${checkpoint}`);
  }
}

/** An event does not follow the state the read model holds (evolve refused it). */
export class FoldError extends Error {
  override name = 'FoldError';
  constructor(
    readonly evalId: string,
    readonly partition: number,
    readonly checkpoint: bigint,
    cause: ProjectionError,
  ) {
    super(`cannot fold ${evalId} in partition ${partition} at checkpoint ${checkpoint}: ${cause.message}`, { cause });
  }
}

export interface PlannedBatch {
  /** One write per partition that is behind the batch's last position (idle ones included). */
  readonly writes: PartitionWrite[];
  /** Events applied per partition (for counting what a successful write applied). */
  readonly eventsPerPartition: ReadonlyMap<number, number>;
}

/** Builds the EvaluationUpdate a watcher receives for one event. */
export function updateFor(event: RecordedEvent, state: Evaluation): EvaluationUpdate {
  return {
    evaluation: state,
    eventType: EVENT_TYPE_TO_PROTO[event.event.type],
    revision: event.revision,
    position: event.position,
  };
}

/**
 * Plans one projection step, purely: folds `events` (consecutive positions) into each
 * partition's states with `evolve` and lists every write, per partition. A partition applies
 * only the events above its own checkpoint and then moves its checkpoint to the batch's last
 * position, even when none of the events are its own (so idle partitions keep up and the
 * lowest checkpoint is the read models' position).
 *
 * Throws GapError when the batch starts after the lowest checkpoint + 1, FoldError when an
 * event does not follow the stored state.
 */
export function planBatch(
  events: readonly RecordedEvent[],
  snapshots: readonly PartitionSnapshot[],
  layout: KeyLayout,
): PlannedBatch {
  const first = events[0];
  const lastEvent = events[events.length - 1];
  if (first === undefined || lastEvent === undefined) return { writes: [], eventsPerPartition: new Map() };
  let expected = BigInt(first.position);
  for (const event of events) {
    if (BigInt(event.position) !== expected) {
      throw new Error(`batch is not consecutive: position ${event.position} where ${expected} was expected`);
    }
    expected += 1n;
  }
  const last = BigInt(lastEvent.position);
  const lowest = snapshots.reduce((min, s) => (s.checkpoint < min ? s.checkpoint : min), last);
  if (BigInt(first.position) > lowest + 1n) throw new GapError(BigInt(first.position), lowest);

  const byPartition = new Map<number, RecordedEvent[]>();
  for (const event of events) {
    const p = layout.partitionOf(event.evalId);
    const list = byPartition.get(p);
    if (list === undefined) byPartition.set(p, [event]);
    else list.push(event);
  }

  const writes: PartitionWrite[] = [];
  const eventsPerPartition = new Map<number, number>();
  snapshots.forEach((snapshot, partition) => {
    if (snapshot.checkpoint >= last) return;
    const states = new Map(snapshot.states);
    const touched = new Set<string>();
    const ops: WriteOp[] = [];
    let applied = 0;
    for (const event of byPartition.get(partition) ?? []) {
      if (BigInt(event.position) <= snapshot.checkpoint) continue;
      const before = states.get(event.evalId);
      let after: Evaluation;
      try {
        after = evolve(before, event);
      } catch (err) {
        if (err instanceof ProjectionError) throw new FoldError(event.evalId, partition, snapshot.checkpoint, err);
        throw err;
      }
      const update = Buffer.from(EvaluationUpdate.encode(updateFor(event, after)).finish());
      ops.push(
        ...indexWrites(layout, partition, before, after),
        ...historyWrites(layout, partition, event.evalId, update),
        ...changeLogWrites(layout, partition, event.position, update),
      );
      states.set(event.evalId, after);
      touched.add(event.evalId);
      applied += 1;
    }
    for (const evalId of touched) {
      const state = states.get(evalId);
      if (state !== undefined) ops.push(...recordWrites(layout, partition, state));
    }
    writes.push({ partition, expectedCheckpoint: snapshot.checkpoint, newCheckpoint: last, ops });
    eventsPerPartition.set(partition, applied);
  });
  return { writes, eventsPerPartition };
}
