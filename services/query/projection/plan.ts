import { evolve, EVENT_TYPE_TO_PROTO, ProjectionError, type RecordedEvent } from '../../../shared/domain';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { Evaluation, EventType, type EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
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
 * encoded once. `writer` may be reused across calls (it keeps its grown buffer).
 */
export function encodeUpdate(
  event: RecordedEvent,
  state: Evaluation,
  writer: BinaryWriter = new BinaryWriter(),
): { update: Buffer; record: Buffer } {
  const update = bufferOf(writeUpdate(writer, event, state).finish());
  return { update, record: embeddedState(update) };
}

/** Appends the encoded update to `writer` (field order and defaults as ts-proto writes them). */
function writeUpdate(writer: BinaryWriter, event: RecordedEvent, state: Evaluation): BinaryWriter {
  Evaluation.encode(state, writer.uint32(10).fork()).join();
  const eventType = EVENT_TYPE_TO_PROTO[event.event.type];
  if (eventType !== EventType.EVENT_TYPE_UNSPECIFIED) writer.uint32(16).int32(eventType);
  if (event.revision !== '0') writer.uint32(24).int64(event.revision);
  if (event.position !== '0') writer.uint32(32).int64(event.position);
  return writer;
}

/** The length-delimited bytes at `offset` (a varint length, then the bytes). */
function delimited(bytes: Buffer, offset: number): Buffer {
  let pos = offset;
  let length = 0;
  for (let shift = 0; ; shift += 7) {
    const byte = bytes[pos++] ?? 0;
    length += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) break;
  }
  return bytes.subarray(pos, pos + length);
}

/** The state an encoded update embeds: field 1, after its one-byte tag. */
function embeddedState(update: Buffer): Buffer {
  return delimited(update, 1);
}

function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
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
  if (first === undefined || lastEvent === undefined)
    return { writes: [], eventsPerPartition: new Map(), states: new Map() };
  const firstPosition = BigInt(first.position);
  const last = BigInt(lastEvent.position);
  events.forEach((event, i) => {
    const expected = firstPosition + BigInt(i);
    if (BigInt(event.position) !== expected) {
      throw new Error(`batch is not consecutive: position ${event.position} where ${expected} was expected`);
    }
  });
  const lowest = snapshots.reduce((min, s) => (s.checkpoint < min ? s.checkpoint : min), last);
  if (firstPosition > lowest + 1n) throw new GapError(firstPosition, lowest);

  /** Per partition, the indexes of its events (event i is at position firstPosition + i). */
  const byPartition = new Map<number, number[]>();
  events.forEach((event, i) => {
    const p = layout.partitionOf(event.evalId);
    const list = byPartition.get(p);
    if (list === undefined) byPartition.set(p, [i]);
    else list.push(i);
  });
  // The writes are grouped by key when encoded: handing out one string per key spares building
  // and hashing a new one for every op.
  const keys = memoizedKeys(layout);

  const writes: PartitionWrite[] = [];
  const eventsPerPartition = new Map<number, number>();
  const changed = new Map<string, Evaluation>();
  const writer = new BinaryWriter();
  snapshots.forEach((snapshot, partition) => {
    if (snapshot.checkpoint >= last) return;
    const states = new Map(snapshot.states);
    // Each touched evaluation's latest update: its state's encoding is the record.
    const touched = new Map<string, Buffer>();
    const ops: WriteOp[] = [];
    let applied = 0;
    // Every update of the partition goes into one buffer (one allocation, not one per event),
    // each length-delimited; the writes hold views into it.
    const folded: { event: RecordedEvent; before: Evaluation | undefined; after: Evaluation }[] = [];
    // Events at or below the partition's checkpoint are applied already.
    const applyFrom = snapshot.checkpoint < firstPosition ? 0 : Number(snapshot.checkpoint - firstPosition) + 1;
    for (const i of byPartition.get(partition) ?? []) {
      const event = events[i] as RecordedEvent;
      if (i < applyFrom) continue;
      const before = states.get(event.evalId);
      let after: Evaluation;
      try {
        after = evolve(before, event);
      } catch (err) {
        if (err instanceof ProjectionError) throw new FoldError(event.evalId, partition, snapshot.checkpoint, err);
        throw err;
      }
      writeUpdate(writer.fork(), event, after).join();
      states.set(event.evalId, after);
      folded.push({ event, before, after });
    }
    const updates = bufferOf(writer.finish());
    let offset = 0;
    for (const { event, before, after } of folded) {
      // One encoding of the state per event: the update embeds it, the record is the last one.
      const update = delimited(updates, offset);
      offset = update.byteOffset - updates.byteOffset + update.length;
      ops.push(
        ...indexWrites(keys, partition, before, after),
        ...historyWrites(keys, partition, event.evalId, update),
        ...changeLogWrites(keys, partition, event.position, update),
      );
      touched.set(event.evalId, update);
      applied += 1;
    }
    for (const [evalId, update] of touched) {
      const state = states.get(evalId);
      if (state === undefined) continue;
      ops.push(...recordWrites(keys, partition, state, embeddedState(update)));
      changed.set(evalId, state);
    }
    writes.push({ partition, expectedCheckpoint: snapshot.checkpoint, newCheckpoint: last, ops });
    eventsPerPartition.set(partition, applied);
  });
  return { writes, eventsPerPartition, states: changed };
}

/** `layout`, handing out the same string object each time it is asked for the same key. */
function memoizedKeys(layout: KeyLayout): KeyLayout {
  const checkpoint: string[] = [];
  const indexAll: string[] = [];
  const indexStatus: string[][] = [];
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
    indexAll: (p) => (indexAll[p] ??= layout.indexAll(p)),
    indexStatus: (p, status) => ((indexStatus[p] ??= [])[status] ??= layout.indexStatus(p, status)),
    changeLog: (p) => (changeLog[p] ??= layout.changeLog(p)),
    record: (p, evalId) => ofEvaluation(records, p, evalId, (q, id) => layout.record(q, id)),
    history: (p, evalId) => ofEvaluation(histories, p, evalId, (q, id) => layout.history(q, id)),
  };
}
