import type { Redis } from 'ioredis';
import { isTerminalProto, type RecordedEvent } from '../../../shared/domain';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { Logger } from '../../../shared/logging';
import { minCheckpoint } from '../read-models/checkpoints';
import { createCheckpoints } from '../redis/checkpoints';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';
import type { PartitionWrite } from '../read-models/write-ops';
import { createProjectionApplier, type ProjectionStore } from './applier';
import type { EventBatch, EventLog } from './event-log';
import { FoldError, GapError, planBatch, type PlannedBatch } from './plan';

export interface RebuildResult {
  readonly deletedKeys: number;
  /** Events this run applied (fewer when running replicas applied some). */
  readonly events: number;
  readonly checkpoint: bigint;
  readonly seconds: number;
}

export interface RebuildOptions {
  readonly redis: Redis;
  readonly layout: KeyLayout;
  readonly eventLog: EventLog;
  readonly store: ProjectionStore;
  readonly logger: Logger;
  /**
   * Events read from PostgreSQL at a time (default 1,000). Small batches keep little alive
   * while the next one is read: a young-generation GC then has less to copy.
   */
  readonly batchSize?: number;
  /**
   * Events per atomic write (one script per partition; default 1,000). Redis runs nothing else
   * while a script runs, so this bounds how long a rebuild holds up the replicas' reads.
   */
  readonly writeSize?: number;
  /** States of unfinished evaluations kept in memory between writes (default 100,000). */
  readonly stateCacheSize?: number;
  readonly onProgress?: (applied: number, position: bigint) => void;
}

/** Writes sent to Redis and not yet answered; the next write is planned meanwhile. */
const MAX_WRITES_IN_FLIGHT = 2;
/** Writes planned while the old keys are being deleted (a SCAN of the whole keyspace). */
const MAX_WRITES_PLANNED_AHEAD = 32;
const SCAN_COUNT = 10_000;

/**
 * Deletes every read-model key of the layout's prefix and projects the event log again from
 * position 0, through the same fold (`planBatch`) and the same atomic compare-and-set script
 * per partition as the live projection, so the result is the same, and replicas running
 * meanwhile can help without an event being applied twice.
 *
 * What makes it fast, compared with a catch-up:
 * - the first writes are planned while the old keys are deleted;
 * - the next batch is read from PostgreSQL while the current one is folded and written, and
 *   each write is sent without waiting for the one before (Redis runs them in order on the
 *   connection; each expects the checkpoint the one before sets);
 * - the states a write needs come from memory: the rebuild keeps the states it wrote for the
 *   evaluations that are not finished yet (a bounded map), and knows an evaluation whose first
 *   event here is its revision 1 has no state yet. Only the others are read from Redis.
 *
 * If a write finds another checkpoint than expected (a replica applied events first), the
 * writes in flight are awaited, the memory is dropped, and the rebuild catches up from the
 * lowest checkpoint with the live projection's applier (which reads states from Redis) before
 * going on.
 */
export async function rebuildReadModels(deps: RebuildOptions): Promise<RebuildResult> {
  const { redis, layout, eventLog, store, logger } = deps;
  const batchSize = deps.batchSize ?? 1000;
  const writeSize = deps.writeSize ?? 1000;
  const cacheSize = deps.stateCacheSize ?? 100_000;
  const started = process.hrtime.bigint();

  const reads = prefetching(eventLog, batchSize);
  // The first writes are planned while the old keys are deleted, and sent once they are.
  let deleting = true;
  const deletion = deleteReadModels(redis, layout).then((deletedKeys) => {
    deleting = false;
    logger.info('read models deleted', { deletedKeys, prefix: layout.prefix });
    return deletedKeys;
  });
  deletion.catch(() => undefined); // awaited with the first write

  const applier = createProjectionApplier({ store, eventLog, layout, logger });
  const checkpointReader = createCheckpoints(redis, layout);
  const partitions = partitionNumbers(layout);
  /**
   * What each partition's checkpoint is once the writes sent so far are applied: none after
   * the deletion. (A replica that writes first makes the first write conflict.)
   */
  let checkpoints = partitions.map(() => 0n);
  /** States at `checkpoints` of unfinished evaluations this run wrote (the most recent ones). */
  const cache = createStateCache(cacheSize);
  const inFlight: Promise<{ applied: number; conflict: boolean }>[] = [];
  let applied = 0;
  let conflicted = false;
  let sentUpTo = 0n;

  /** Waits for writes in flight until at most `keep` remain. */
  const settle = async (keep: number): Promise<void> => {
    while (inFlight.length > keep) {
      const result = await (inFlight.shift() as (typeof inFlight)[number]);
      applied += result.applied;
      if (result.conflict) conflicted = true;
    }
  };

  /** After a conflict: apply everything up to `upTo` the way the live projection does. */
  const resync = async (upTo: bigint, reason: string): Promise<void> => {
    await settle(0);
    cache.clear();
    conflicted = false;
    logger.info('rebuild: read models moved under it; catching up from the log', {
      reason,
      upTo: upTo.toString(),
    });
    for (;;) {
      checkpoints = await checkpointReader.readAll();
      const from = minCheckpoint(checkpoints);
      if (from >= upTo) return;
      const { events } = await eventLog.readAfter(from, Math.min(batchSize, Number(upTo - from)));
      if (events.length === 0) return;
      applied += (await applier.apply(events)).applied;
    }
  };

  const writeChunk = async (chunk: readonly RecordedEvent[]): Promise<void> => {
    const first = chunk[0];
    const last = chunk[chunk.length - 1];
    if (first === undefined || last === undefined) return;
    const states = partitions.map(() => new Map<string, Evaluation>());
    const missing = new Map<number, string[]>();
    /** The chunk's evaluations: true for those it creates (revision 1 above the checkpoint). */
    const created = new Map<string, boolean>();
    for (const event of chunk) {
      const id = event.evalId;
      if (created.has(id)) continue;
      const p = layout.partitionOf(id);
      const isNew = event.revision === '1' && BigInt(event.position) > (checkpoints[p] ?? 0n);
      created.set(id, isNew);
      if (isNew) continue; // no state before this chunk, none in memory
      const state = cache.get(id);
      if (state !== undefined) states[p]?.set(id, state);
      else {
        const ids = missing.get(p);
        if (ids === undefined) missing.set(p, [id]);
        else ids.push(id);
      }
    }
    if (missing.size > 0) {
      // Read after the writes in flight: the states must be those of `checkpoints`.
      await settle(0);
      if (conflicted) return resync(BigInt(last.position), 'conflict');
      const loaded = await store.load(missing);
      if (loaded.some((snapshot, p) => snapshot.checkpoint !== checkpoints[p]))
        return resync(BigInt(last.position), 'checkpoint moved');
      loaded.forEach((snapshot, p) => {
        for (const [id, state] of snapshot.states) states[p]?.set(id, state);
      });
    }
    let plan: PlannedBatch;
    try {
      plan = planBatch(
        chunk,
        partitions.map((p) => ({ checkpoint: checkpoints[p] ?? 0n, states: states[p] ?? new Map() })),
        layout,
      );
    } catch (err) {
      if (!(err instanceof FoldError || err instanceof GapError)) throw err;
      // The applier repairs a state that does not fold, as the live projection does.
      return resync(BigInt(last.position), err.message);
    }
    const sending = deletion.then(() => sendWrites(store, plan));
    sending.catch(() => undefined); // handled when settled; until then not an unhandled rejection
    inFlight.push(sending);
    sentUpTo = BigInt(last.position);
    for (const write of plan.writes) checkpoints[write.partition] = write.newCheckpoint;
    for (const [id, state] of plan.states) {
      if (!isTerminalProto(state.status)) cache.set(id, state);
      else if (created.get(id) !== true) cache.delete(id);
    }
    await settle((deleting ? MAX_WRITES_PLANNED_AHEAD : MAX_WRITES_IN_FLIGHT) - 1);
    if (conflicted) await resync(sentUpTo, 'conflict');
  };

  for (;;) {
    const { events: batch, full } = await reads.next();
    const lastEvent = batch[batch.length - 1];
    if (lastEvent === undefined) break;
    for (let from = 0; from < batch.length; from += writeSize) await writeChunk(batch.slice(from, from + writeSize));
    deps.onProgress?.(applied, BigInt(lastEvent.position));
    if (!full) break;
  }
  await settle(0);
  if (conflicted) await resync(sentUpTo, 'conflict');
  const deletedKeys = await deletion;

  const checkpoint = minCheckpoint(await checkpointReader.readAll());
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  logger.info('read models rebuilt', { events: applied, checkpoint: checkpoint.toString(), seconds });
  return { deletedKeys, events: applied, checkpoint, seconds };
}

/**
 * At most about `size` states, the most recently written kept: two generations, the older
 * dropped whole when the newer is full (no per-entry bookkeeping).
 */
function createStateCache(size: number): {
  get(id: string): Evaluation | undefined;
  set(id: string, state: Evaluation): void;
  delete(id: string): void;
  clear(): void;
} {
  let current = new Map<string, Evaluation>();
  let previous = new Map<string, Evaluation>();
  const limit = Math.max(1, Math.ceil(size / 2));
  return {
    get: (id) => current.get(id) ?? previous.get(id),
    set(id, state) {
      if (size === 0) return;
      if (current.size >= limit) {
        previous = current;
        current = new Map();
      }
      current.set(id, state);
    },
    delete(id) {
      current.delete(id);
      previous.delete(id);
    },
    clear() {
      current = new Map();
      previous = new Map();
    },
  };
}

async function sendWrites(store: ProjectionStore, plan: PlannedBatch): Promise<{ applied: number; conflict: boolean }> {
  const results = await store.write(plan.writes);
  let applied = 0;
  let conflict = false;
  results.forEach((result, i) => {
    const write = plan.writes[i] as PartitionWrite;
    if (result === true) applied += plan.eventsPerPartition.get(write.partition) ?? 0;
    else conflict = true;
  });
  return { applied, conflict };
}

/** Reads the log in batches, one batch ahead of the caller (none after the last). */
function prefetching(eventLog: EventLog, batchSize: number): { next(): Promise<EventBatch> } {
  let after = 0n;
  const read = (): Promise<EventBatch> => {
    const promise = eventLog.readAfter(after, batchSize);
    // Handled when awaited; until then it must not count as an unhandled rejection.
    promise.catch(() => undefined);
    return promise;
  };
  let ahead: Promise<EventBatch> | undefined = read();
  return {
    async next() {
      const batch = await (ahead ?? read());
      ahead = undefined;
      const last = batch.events[batch.events.length - 1];
      if (last !== undefined) after = BigInt(last.position);
      if (batch.full) ahead = read();
      return batch;
    },
  };
}

/** SCAN + UNLINK of every read-model key of the layout (UNLINK frees big values off the main thread). */
async function deleteReadModels(redis: Redis, layout: KeyLayout): Promise<number> {
  const unlinks: Promise<number>[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', layout.scanPattern, 'COUNT', SCAN_COUNT);
    cursor = next;
    // Not awaited one by one: the next SCAN goes out while Redis unlinks.
    if (keys.length > 0) unlinks.push(redis.unlink(...keys));
  } while (cursor !== '0');
  const counts = await Promise.all(unlinks);
  return counts.reduce((sum, n) => sum + n, 0);
}
