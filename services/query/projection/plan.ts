import {
  evolve,
  EVENT_TYPE_TO_PROTO,
  isTerminalProto,
  ProjectionError,
  type RecordedEvent,
} from '../../../shared/domain';
import { Evaluation, type EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { changeLogWrites } from '../read-models/change-log';
import { historyDrop, historyWrites } from '../read-models/evaluation-history';
import { storesMetadata } from '../read-models/stored-update';
import { facetMarker, indexReset, indexWrites } from '../read-models/evaluation-list';
import { recordWrites } from '../read-models/evaluation-record';
import type { KeyLayout } from '../read-models/keys';
import { eventMark } from '../read-models/checkpoints';
import { WriteSet, type PartitionWrite } from '../read-models/write-ops';
import { UpdateEncoder } from '../read-models/update-encoding';

type EncodedAt = ReturnType<UpdateEncoder['append']>;

/** What one partition holds before a projection step: its checkpoint and the batch's states. */
export interface PartitionSnapshot {
  readonly checkpoint: bigint;
  /** States of the batch's evaluations that live in this partition; absent = unknown. */
  readonly states: ReadonlyMap<string, Evaluation>;
  /**
   * Evaluations whose state in `states` was taken from the log because the stored record
   * disagreed with it (a replay over records ahead of a lost checkpoint, a lost record): their
   * index memberships follow that record, not the state, so their moves reset them whole.
   */
  readonly fromLog?: ReadonlySet<string>;
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

/** One evaluation whose event does not follow the state its read model holds. */
export interface FoldFailure {
  readonly evalId: string;
  readonly partition: number;
  /** The checkpoint of its partition when the state was read. */
  readonly checkpoint: bigint;
  readonly reason: string;
}

/**
 * Events do not follow the states the read models hold (evolve refused them): every such
 * evaluation of the batch, so that one repair covers them all (one per attempt gave up on a
 * lost checkpoint with a few dozen evaluations).
 */
export class FoldError extends Error {
  override name = 'FoldError';
  constructor(readonly failures: readonly FoldFailure[]) {
    const [first] = failures;
    super(
      `cannot fold ${failures.length} evaluation(s)` +
        (first === undefined
          ? ''
          : `, first ${first.evalId} in partition ${first.partition} at checkpoint ${first.checkpoint}: ${first.reason}`),
    );
  }
}

export interface PlannedBatch {
  /** One write per partition that is behind the batch's last position (idle ones included). */
  readonly writes: PartitionWrite[];
  /** Events applied per partition (for counting what a successful write applied). */
  readonly eventsPerPartition: ReadonlyMap<number, number>;
  /** The state after the step of every evaluation the step changed (a rebuild keeps them). */
  readonly states: ReadonlyMap<string, Evaluation>;
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
 * Encodes the update a watcher receives for `event` — `EvaluationUpdate.encode(updateFor(event,
 * state))`, byte for byte — and returns with it the state's own encoding (`Evaluation.encode
 * (state)`, the record), which the update embeds: a view into the same bytes, so a state is
 * encoded once. `encoder` may be reused across calls.
 */
export function encodeUpdate(
  event: RecordedEvent,
  state: Evaluation,
  encoder: UpdateEncoder = new UpdateEncoder(1024),
): { update: Buffer; record: Buffer } {
  encoder.reset();
  const at = encoder.append(event, state);
  const bytes = encoder.finish();
  return { update: bytes.subarray(at.start, at.end), record: bytes.subarray(at.stateStart, at.stateEnd) };
}

/**
 * Encodes an evaluation's events (in revision order, from its first) as watchers receive them,
 * metadata included: a terminal evaluation's replay, which its deleted history no longer holds.
 */
export function encodeUpdates(events: readonly RecordedEvent[]): Buffer[] {
  const encoder = new UpdateEncoder(Math.max(1024, events.length * 512));
  let state: Evaluation | undefined;
  return events.map((event) => {
    state = evolve(state, event);
    return Buffer.from(encodeUpdate(event, state, encoder).update);
  });
}

/**
 * Plans one projection step, purely: folds `events` (consecutive positions) into each
 * partition's states with `evolve` and lists every write, per partition. A partition applies
 * only the events above its own checkpoint and then moves its checkpoint to the batch's last
 * position, even when none of the events are its own (so idle partitions keep up and the
 * lowest checkpoint is the read models' position).
 *
 * Throws GapError when the batch starts after the lowest checkpoint + 1, FoldError (naming
 * every such evaluation) when events do not follow the stored states.
 */
export function planBatch(
  events: readonly RecordedEvent[],
  snapshots: readonly PartitionSnapshot[],
  layout: KeyLayout,
): PlannedBatch {
  const first = events[0];
  const lastEvent = events[events.length - 1];
  if (first === undefined || lastEvent === undefined)
    return { writes: [], eventsPerPartition: new Map(), states: new Map() };
  const firstPosition = BigInt(first.position);
  const last = BigInt(lastEvent.position);
  assertConsecutive(events, firstPosition);
  const lowest = lowestCheckpoint(snapshots, last);
  if (firstPosition > lowest + 1n) throw new GapError(firstPosition, lowest);

  const byPartition = eventIndexesByPartition(events, layout);
  // The writes are grouped by key when encoded: handing out one string per key spares building
  // and hashing a new one for every op.
  const keys = memoizedKeys(layout);

  const writes: PartitionWrite[] = [];
  const eventsPerPartition = new Map<number, number>();
  const changed = new Map<string, Evaluation>();
  const failures: FoldFailure[] = [];
  const encoder = new UpdateEncoder(Math.max(4096, events.length * 512));
  snapshots.forEach((snapshot, partition) => {
    if (snapshot.checkpoint >= last) return;
    const fold = foldPartition(
      events,
      byPartition.get(partition) ?? [],
      firstUnapplied(snapshot.checkpoint, firstPosition),
      partition,
      snapshot,
      encoder,
      failures,
    );
    if (failures.length > 0) return; // nothing is written; the rest is folded to find them all
    const { ops, applied } = partitionWriteSet(keys, partition, fold, snapshot.fromLog, changed);
    // Facet indexes built from the first event on are whole (evaluation-list.ts `facetMarker`).
    if (snapshot.checkpoint === 0n) ops.set(keys.facets(partition), Buffer.from(facetMarker(layout)));
    writes.push({
      partition,
      expectedCheckpoint: snapshot.checkpoint,
      newCheckpoint: last,
      checkpointEvent: eventMark(lastEvent),
      ops,
    });
    eventsPerPartition.set(partition, applied);
  });
  if (failures.length > 0) throw new FoldError(failures);
  return { writes, eventsPerPartition, states: changed };
}

/**
 * The write that puts evaluations' read models back as the log has them at the partition's
 * checkpoint, when a read found one lost (a record, or its history, deleted or evicted):
 * the record, every history entry (put at its revision, so the list ends exactly at the last
 * one; none for an evaluation that ended, whose history is deleted), and the index membership (added to `all` and its status, removed from every other
 * status). Change-log entries are not per evaluation and are left as they are. The checkpoint
 * stays where it is: the write only applies if no step moved it meanwhile.
 *
 * `events`: every event of those evaluations (all in `partition`) up to the checkpoint, in
 * position order. An evaluation without events there has nothing to repair.
 */
export function planRepair(
  events: readonly RecordedEvent[],
  partition: number,
  checkpoint: bigint,
  layout: KeyLayout,
): PartitionWrite {
  const ops = new WriteSet();
  const encoder = new UpdateEncoder(Math.max(4096, events.length * 512));
  const states = new Map<string, { state: Evaluation; updates: { revision: string; update: Buffer }[] }>();
  for (const event of events) {
    if (BigInt(event.position) > checkpoint) break;
    if (layout.partitionOf(event.evalId) !== partition)
      throw new Error(`${event.evalId} is not in partition ${partition}`);
    const folded = states.get(event.evalId);
    const state = evolve(folded?.state, event);
    encoder.reset();
    const at = encoder.append(event, state, storesMetadata(event.revision));
    const update = Buffer.from(encoder.finish().subarray(at.start, at.end));
    const updates = folded?.updates ?? [];
    updates.push({ revision: event.revision, update });
    states.set(event.evalId, { state, updates });
  }
  for (const { state, updates } of states.values()) {
    if (isTerminalProto(state.status)) historyDrop(layout, partition, state.evalId, ops);
    else
      for (const { revision, update } of updates) historyWrites(layout, partition, state.evalId, revision, update, ops);
    recordWrites(layout, partition, state, ops);
    indexReset(layout, partition, state, ops);
  }
  return { partition, expectedCheckpoint: checkpoint, newCheckpoint: checkpoint, ops };
}

/**
 * The writes that move each partition below `horizon` (the event log's: the events at or below
 * it left the log with their archived evaluations) up to it and write nothing else, but the
 * facet marker of an empty partition (as planBatch's first step on one does): read models that
 * start from nothing start there. `checkpoints`: each partition's, in partition order.
 */
export function planSkip(checkpoints: readonly bigint[], horizon: bigint, layout: KeyLayout): PartitionWrite[] {
  const writes: PartitionWrite[] = [];
  checkpoints.forEach((checkpoint, partition) => {
    if (checkpoint >= horizon) return;
    const ops = new WriteSet();
    if (checkpoint === 0n) ops.set(layout.facets(partition), Buffer.from(facetMarker(layout)));
    writes.push({ partition, expectedCheckpoint: checkpoint, newCheckpoint: horizon, ops });
  });
  return writes;
}

/** Throws unless event i is at position `firstPosition + i`. */
function assertConsecutive(events: readonly RecordedEvent[], firstPosition: bigint): void {
  events.forEach((event, i) => {
    const expected = firstPosition + BigInt(i);
    if (BigInt(event.position) !== expected) {
      throw new Error(`batch is not consecutive: position ${event.position} where ${expected} was expected`);
    }
  });
}

/** The lowest partition checkpoint, or `last` when every partition is at or above it. */
function lowestCheckpoint(snapshots: readonly PartitionSnapshot[], last: bigint): bigint {
  return snapshots.reduce((min, s) => (s.checkpoint < min ? s.checkpoint : min), last);
}

/**
 * Per partition, the indexes of its events in `events`, in batch order (event i is at position
 * firstPosition + i). Partitions without events are absent.
 */
export function eventIndexesByPartition(events: readonly RecordedEvent[], layout: KeyLayout): Map<number, number[]> {
  const byPartition = new Map<number, number[]>();
  events.forEach((event, i) => {
    const p = layout.partitionOf(event.evalId);
    const list = byPartition.get(p);
    if (list === undefined) byPartition.set(p, [i]);
    else list.push(i);
  });
  return byPartition;
}

/**
 * The index in the batch of the first event a partition at `checkpoint` has not applied: events
 * at or below its checkpoint are applied already.
 */
export function firstUnapplied(checkpoint: bigint, firstPosition: bigint): number {
  return checkpoint < firstPosition ? 0 : Number(checkpoint - firstPosition) + 1;
}

/** One event folded into its partition: the states around it and where its update was encoded. */
interface FoldedEvent {
  readonly event: RecordedEvent;
  readonly before: Evaluation | undefined;
  readonly after: Evaluation;
  readonly at: EncodedAt;
}

/** A partition's events folded: the states after them, each event, and the buffer of updates. */
interface PartitionFold {
  readonly states: ReadonlyMap<string, Evaluation>;
  readonly folded: readonly FoldedEvent[];
  /** Where each touched evaluation's record (its last state, metadata included) is in `updates`. */
  readonly records: ReadonlyMap<string, { readonly start: number; readonly end: number }>;
  /** Every update and record of the partition; `folded[].at` and `records` are offsets into it. */
  readonly updates: Buffer;
}

/**
 * Folds the partition's events from index `applyFrom` on into its snapshot's states with
 * `evolve`, appending each event's update to `encoder` (one buffer per partition, not one per
 * event). An event that does not follow the stored state is added to `failures` and its
 * evaluation's later events are skipped (the fold goes on to find the other failures).
 */
function foldPartition(
  events: readonly RecordedEvent[],
  indexes: readonly number[],
  applyFrom: number,
  partition: number,
  snapshot: PartitionSnapshot,
  encoder: UpdateEncoder,
  failures: FoldFailure[],
): PartitionFold {
  const states = new Map(snapshot.states);
  const folded: FoldedEvent[] = [];
  const failed = new Set<string>();
  // Per touched evaluation, its last folded event.
  const lastOf = new Map<string, FoldedEvent>();
  encoder.reset();
  for (const i of indexes) {
    const event = events[i] as RecordedEvent;
    if (i < applyFrom || failed.has(event.evalId)) continue;
    const before = states.get(event.evalId);
    let after: Evaluation;
    try {
      after = evolve(before, event);
    } catch (err) {
      if (!(err instanceof ProjectionError)) throw err;
      failed.add(event.evalId);
      failures.push({ evalId: event.evalId, partition, checkpoint: snapshot.checkpoint, reason: err.message });
      continue;
    }
    states.set(event.evalId, after);
    const one = { event, before, after, at: encoder.append(event, after, storesMetadata(event.revision)) };
    folded.push(one);
    lastOf.set(event.evalId, one);
  }
  // A record is the state its last update embeds when that update carries the metadata (a
  // submit); otherwise the state is encoded once more, whole.
  const records = new Map<string, { start: number; end: number }>();
  for (const [evalId, { event, after, at }] of lastOf) {
    if (failed.has(evalId)) continue;
    records.set(
      evalId,
      storesMetadata(event.revision) ? { start: at.stateStart, end: at.stateEnd } : encoder.appendState(after),
    );
  }
  return { states, folded, records, updates: encoder.finish() };
}

/**
 * The writes of one folded partition: per event its index moves, history entry (none for an
 * evaluation the batch ends: its history is deleted) and change-log entry; per touched
 * evaluation one record, its latest state (added to `changed`). The writes hold views into
 * `fold.updates`.
 */
function partitionWriteSet(
  keys: KeyLayout,
  partition: number,
  { states, folded, records, updates }: PartitionFold,
  fromLog: ReadonlySet<string> | undefined,
  changed: Map<string, Evaluation>,
): { ops: WriteSet; applied: number } {
  const ops = new WriteSet();
  let applied = 0;
  // Each evaluation's state before its first event of the batch: its index moves are made once,
  // from there to its last state (the write is atomic, nobody sees the states in between). A
  // rebuild, whose batches hold whole lives, so moves each evaluation once instead of per event.
  const firstBefore = new Map<string, Evaluation | undefined>();
  for (const { event, before, after, at } of folded) {
    const update = updates.subarray(at.start, at.end);
    if (!firstBefore.has(event.evalId)) firstBefore.set(event.evalId, before);
    if (!isTerminalProto(states.get(event.evalId)?.status ?? after.status))
      historyWrites(keys, partition, event.evalId, event.revision, update, ops);
    changeLogWrites(
      keys,
      partition,
      event.position,
      update,
      { evalId: event.evalId, status: after.status, revision: event.revision },
      ops,
    );
    applied += 1;
  }
  for (const [evalId, before] of firstBefore) {
    const state = states.get(evalId);
    if (state === undefined) continue;
    if (fromLog?.has(evalId) === true) indexReset(keys, partition, state, ops);
    else indexWrites(keys, partition, before, state, ops);
  }
  for (const [evalId, { start, end }] of records) {
    const state = states.get(evalId);
    if (state === undefined) continue;
    if (isTerminalProto(state.status)) historyDrop(keys, partition, evalId, ops);
    recordWrites(keys, partition, state, ops, updates.subarray(start, end));
    changed.set(evalId, state);
  }
  return { ops, applied };
}

/** `layout`, handing out the same string object each time it is asked for the same key. */
function memoizedKeys(layout: KeyLayout): KeyLayout {
  const checkpoint: string[] = [];
  const indexes: Map<string, string>[] = [];
  const index = (p: number, id: string, make: () => string): string => {
    const cache = (indexes[p] ??= new Map());
    let key = cache.get(id);
    if (key === undefined) cache.set(id, (key = make()));
    return key;
  };
  const changeLog: string[] = [];
  const records: Map<string, string>[] = [];
  const histories: Map<string, string>[] = [];
  const ofEvaluation = (
    caches: Map<string, string>[],
    partition: number,
    evalId: string,
    make: (partition: number, evalId: string) => string,
  ): string => {
    const cache = (caches[partition] ??= new Map());
    let key = cache.get(evalId);
    if (key === undefined) cache.set(evalId, (key = make(partition, evalId)));
    return key;
  };
  return {
    ...layout,
    checkpoint: (p) => (checkpoint[p] ??= layout.checkpoint(p)),
    indexAll: (p, tenant) => index(p, tenant, () => layout.indexAll(p, tenant)),
    indexStatus: (p, tenant, status) => index(p, `${tenant}/${status}`, () => layout.indexStatus(p, tenant, status)),
    indexFacet: (p, tenant, status, facet, value) =>
      index(p, `${tenant}/${status}:${facet}:${value}`, () => layout.indexFacet(p, tenant, status, facet, value)),
    changeLog: (p) => (changeLog[p] ??= layout.changeLog(p)),
    record: (p, evalId) => ofEvaluation(records, p, evalId, (q, id) => layout.record(q, id)),
    history: (p, evalId) => ofEvaluation(histories, p, evalId, (q, id) => layout.history(q, id)),
  };
}
