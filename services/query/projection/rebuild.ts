import { scanKeys, type RedisClient } from '../../../shared/redis';
import { isTerminalProto, type RecordedEvent } from '../../../shared/domain';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { Logger } from '../../../shared/logging';
import { minCheckpoint, type Checkpoints } from '../read-models/checkpoints';
import { createCheckpoints } from '../redis/checkpoints';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';
import type { PartitionWrite } from '../read-models/write-ops';
import { createProjectionApplier, type ProjectionApplier, type ProjectionStore } from './applier';
import type { EventBatch, EventLog } from './event-log';
import { takeRebuildFence } from '../redis/rebuild-fence';
import { FoldError, GapError, planBatch, planSkip, type PlannedBatch } from './plan';

export interface RebuildResult {
  readonly deletedKeys: number;
  /** Events this run applied (fewer when running replicas applied some). */
  readonly events: number;
  readonly checkpoint: bigint;
  readonly seconds: number;
}

export interface RebuildOptions {
  readonly redis: RedisClient;
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
  /** How long the fence outlives a rebuild that died (default 30 s; redis/rebuild-fence.ts). */
  readonly fenceTtlMs?: number;
}

/** Writes sent to Redis and not yet answered; the next write is planned meanwhile. */
const MAX_WRITES_IN_FLIGHT = 2;
/** Writes planned while the old keys are being deleted (a SCAN of the whole keyspace). */
const MAX_WRITES_PLANNED_AHEAD = 32;
const SCAN_COUNT = 10_000;

/**
 * Deletes every read-model key of the layout's prefix and projects the event log again from
 * position 0, through the same fold (`planBatch`) and the same atomic compare-and-set script
 * per partition as the live projection, so the result is the same. It holds the rebuild fence
 * (redis/rebuild-fence.ts) throughout: replicas running meanwhile write nothing (they retry
 * with backoff and catch up after), and a second rebuild is refused (RebuildRunningError).
 * The checkpoints are deleted first, so a rebuild that dies half-way leaves none claiming data
 * that is gone: replicas then replay the log over what is left, which the repair path handles.
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
  const fence = await takeRebuildFence(deps.redis, deps.layout, deps.logger, deps.fenceTtlMs);
  try {
    return await rebuildBehindFence(deps, fence.token);
  } finally {
    await fence.release();
  }
}

async function rebuildBehindFence(deps: RebuildOptions, fenceToken: string): Promise<RebuildResult> {
  const { redis, layout, eventLog, logger } = deps;
  // Every write of the rebuild passes the fence; the replicas' writes do not.
  const store: ProjectionStore = {
    load: (ids) => deps.store.load(ids),
    write: (writes) => deps.store.write(writes, fenceToken),
  };
  const batchSize = deps.batchSize ?? 1000;
  const writeSize = deps.writeSize ?? 1000;
  const cacheSize = deps.stateCacheSize ?? 100_000;
  const started = process.hrtime.bigint();

  // The events at or below the log's horizon left it (retention): the read models start there.
  // Read before the first read of the log, which starts above it.
  const horizon = await eventLog.horizon();
  const reads = prefetching(eventLog, batchSize);
  // The first writes are planned while the old keys are deleted, and sent once they are.
  const deletion = startDeletion(redis, layout, logger);

  const applier = createProjectionApplier({ store, eventLog, layout, logger });
  const checkpointReader = createCheckpoints(redis, layout);
  const partitions = partitionNumbers(layout);
  const expected: ExpectedReadModels = {
    // None after the deletion. (A replica that writes first makes the first write conflict.)
    checkpoints: partitions.map(() => 0n),
    cache: createStateCache(cacheSize),
  };
  const pipeline = createWritePipeline();
  if (horizon > 0n) {
    const skip: PlannedBatch = {
      writes: planSkip(expected.checkpoints, horizon, layout),
      eventsPerPartition: new Map(),
      states: new Map(),
    };
    pipeline.send(
      deletion.done.then(() => sendWrites(store, skip)),
      horizon,
    );
    expected.checkpoints = partitions.map(() => horizon);
  }
  const resync = (upTo: bigint, reason: string): Promise<void> =>
    resyncFromLog({ pipeline, expected, checkpointReader, eventLog, applier, batchSize, logger }, upTo, reason);
  const chunks: ChunkWriterDeps = { layout, partitions, store, deletion, pipeline, expected, resync };

  for (;;) {
    const { events: batch, full } = await reads.next();
    const lastEvent = batch[batch.length - 1];
    if (lastEvent === undefined) break;
    for (let from = 0; from < batch.length; from += writeSize)
      await writeChunk(chunks, batch.slice(from, from + writeSize));
    deps.onProgress?.(pipeline.applied, BigInt(lastEvent.position));
    if (!full) break;
  }
  await pipeline.settle(0);
  if (pipeline.conflicted) await resync(pipeline.sentUpTo, 'conflict');
  const deletedKeys = await deletion.done;

  const checkpoint = minCheckpoint(await checkpointReader.readAll());
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  logger.info('read models rebuilt', { events: pipeline.applied, checkpoint: checkpoint.toString(), seconds });
  return { deletedKeys, events: pipeline.applied, checkpoint, seconds };
}

/** What the rebuild expects the read models to hold once the writes sent so far are applied. */
export interface ExpectedReadModels {
  /** Each partition's checkpoint. */
  checkpoints: bigint[];
  /** States at `checkpoints` of unfinished evaluations this run wrote (the most recent ones). */
  readonly cache: StateCache;
}

/** What a write sent to Redis reports once answered. */
export interface WriteOutcome {
  /** Events the write applied. */
  readonly applied: number;
  /** True when a partition's checkpoint was not the one expected (a replica wrote first). */
  readonly conflict: boolean;
}

/**
 * The writes sent to Redis and not yet answered, and what the answered ones applied. Writes are
 * sent without waiting for the one before (Redis runs them in order on the connection) and
 * settled oldest first.
 */
export interface WritePipeline {
  /** Events applied so far: by settled writes and by `count`. */
  readonly applied: number;
  /** True when a settled write conflicted and no `resolved()` followed. */
  readonly conflicted: boolean;
  /** Last position of the writes sent so far (0 before the first). */
  readonly sentUpTo: bigint;
  /** Adds a write in flight covering the log up to `upTo`. */
  send(write: Promise<WriteOutcome>, upTo: bigint): void;
  /** Waits for writes in flight, oldest first, until at most `keep` remain. */
  settle(keep: number): Promise<void>;
  /** Counts events applied outside the pipeline (a catch-up after a conflict). */
  count(applied: number): void;
  /** The conflict was dealt with. */
  resolved(): void;
}

export function createWritePipeline(): WritePipeline {
  const inFlight: Promise<WriteOutcome>[] = [];
  let applied = 0;
  let conflicted = false;
  let sentUpTo = 0n;
  return {
    get applied() {
      return applied;
    },
    get conflicted() {
      return conflicted;
    },
    get sentUpTo() {
      return sentUpTo;
    },
    send(write, upTo) {
      write.catch(() => undefined); // handled when settled; until then not an unhandled rejection
      inFlight.push(write);
      sentUpTo = upTo;
    },
    async settle(keep) {
      while (inFlight.length > keep) {
        const result = await (inFlight.shift() as Promise<WriteOutcome>);
        applied += result.applied;
        if (result.conflict) conflicted = true;
      }
    },
    count(n) {
      applied += n;
    },
    resolved() {
      conflicted = false;
    },
  };
}

interface ResyncDeps {
  readonly pipeline: WritePipeline;
  readonly expected: ExpectedReadModels;
  readonly checkpointReader: Checkpoints;
  readonly eventLog: EventLog;
  readonly applier: ProjectionApplier;
  readonly batchSize: number;
  readonly logger: Logger;
}

/** After a conflict: apply everything up to `upTo` the way the live projection does. */
async function resyncFromLog(deps: ResyncDeps, upTo: bigint, reason: string): Promise<void> {
  const { pipeline, expected, checkpointReader, eventLog, applier, batchSize, logger } = deps;
  await pipeline.settle(0);
  expected.cache.clear();
  pipeline.resolved();
  logger.info('rebuild: read models moved under it; catching up from the log', {
    reason,
    upTo: upTo.toString(),
  });
  for (;;) {
    expected.checkpoints = await checkpointReader.readAll();
    const from = minCheckpoint(expected.checkpoints);
    if (from >= upTo) return;
    const { events } = await eventLog.readAfter(from, Math.min(batchSize, Number(upTo - from)));
    if (events.length === 0) return;
    pipeline.count((await applier.apply(events)).applied);
  }
}

/** The states a chunk's write needs, as far as memory knows them. */
export interface ChunkStates {
  /** Per partition: the states known (from the cache). */
  readonly states: Map<string, Evaluation>[];
  /** Per partition: the evaluations whose state must be read from Redis. */
  readonly missing: Map<number, string[]>;
  /** The chunk's evaluations: true for those it creates (revision 1 above the checkpoint). */
  readonly created: Map<string, boolean>;
}

/**
 * Sorts a chunk's evaluations into those it creates (no state before it), those whose state
 * the cache holds, and those to read from Redis.
 */
export function statesInMemory(
  chunk: readonly RecordedEvent[],
  expected: ExpectedReadModels,
  layout: Pick<KeyLayout, 'partitionOf'>,
  partitions: readonly number[],
): ChunkStates {
  const states = partitions.map(() => new Map<string, Evaluation>());
  const missing = new Map<number, string[]>();
  const created = new Map<string, boolean>();
  for (const event of chunk) {
    const id = event.evalId;
    if (created.has(id)) continue;
    const p = layout.partitionOf(id);
    const isNew = event.revision === '1' && BigInt(event.position) > (expected.checkpoints[p] ?? 0n);
    created.set(id, isNew);
    if (isNew) continue; // no state before this chunk, none in memory
    const state = expected.cache.get(id);
    if (state !== undefined) states[p]?.set(id, state);
    else {
      const ids = missing.get(p);
      if (ids === undefined) missing.set(p, [id]);
      else ids.push(id);
    }
  }
  return { states, missing, created };
}

/**
 * Moves `expected` to what a sent plan leaves in Redis: its checkpoints, and its states of
 * unfinished evaluations (a finished one is dropped; one the chunk created was never cached).
 */
export function rememberPlan(
  expected: ExpectedReadModels,
  plan: Pick<PlannedBatch, 'writes' | 'states'>,
  created: ReadonlyMap<string, boolean>,
): void {
  for (const write of plan.writes) expected.checkpoints[write.partition] = write.newCheckpoint;
  for (const [id, state] of plan.states) {
    if (!isTerminalProto(state.status)) expected.cache.set(id, state);
    else if (created.get(id) !== true) expected.cache.delete(id);
  }
}

interface ChunkWriterDeps {
  readonly layout: KeyLayout;
  readonly partitions: readonly number[];
  readonly store: ProjectionStore;
  readonly deletion: Deletion;
  readonly pipeline: WritePipeline;
  readonly expected: ExpectedReadModels;
  readonly resync: (upTo: bigint, reason: string) => Promise<void>;
}

/** Plans one chunk's atomic write and sends it, or catches up from the log when memory is wrong. */
async function writeChunk(deps: ChunkWriterDeps, chunk: readonly RecordedEvent[]): Promise<void> {
  const { layout, partitions, store, deletion, pipeline, expected, resync } = deps;
  const first = chunk[0];
  const last = chunk[chunk.length - 1];
  if (first === undefined || last === undefined) return;
  const { states, missing, created } = statesInMemory(chunk, expected, layout, partitions);
  if (missing.size > 0) {
    // Read after the writes in flight: the states must be those of `expected.checkpoints`.
    await pipeline.settle(0);
    if (pipeline.conflicted) return resync(BigInt(last.position), 'conflict');
    const loaded = await store.load(missing);
    if (loaded.some((snapshot, p) => snapshot.checkpoint !== expected.checkpoints[p]))
      return resync(BigInt(last.position), 'checkpoint moved');
    loaded.forEach((snapshot, p) => {
      for (const [id, state] of snapshot.states) states[p]?.set(id, state);
    });
  }
  let plan: PlannedBatch;
  try {
    plan = planBatch(
      chunk,
      partitions.map((p) => ({ checkpoint: expected.checkpoints[p] ?? 0n, states: states[p] ?? new Map() })),
      layout,
    );
  } catch (err) {
    if (!(err instanceof FoldError || err instanceof GapError)) throw err;
    // The applier repairs a state that does not fold, as the live projection does.
    return resync(BigInt(last.position), err.message);
  }
  pipeline.send(
    deletion.done.then(() => sendWrites(store, plan)),
    BigInt(last.position),
  );
  rememberPlan(expected, plan, created);
  await pipeline.settle((deletion.deleting ? MAX_WRITES_PLANNED_AHEAD : MAX_WRITES_IN_FLIGHT) - 1);
  if (pipeline.conflicted) await resync(pipeline.sentUpTo, 'conflict');
}

/** The deletion of the old read models, under way while the first writes are planned. */
interface Deletion {
  /** The number of keys deleted; rejects when the deletion failed. */
  readonly done: Promise<number>;
  readonly deleting: boolean;
}

function startDeletion(redis: RedisClient, layout: KeyLayout, logger: Logger): Deletion {
  let deleting = true;
  const done = deleteReadModels(redis, layout).then((deletedKeys) => {
    deleting = false;
    logger.info('read models deleted', { deletedKeys, prefix: layout.prefix });
    return deletedKeys;
  });
  done.catch(() => undefined); // awaited with the first write
  return {
    done,
    get deleting() {
      return deleting;
    },
  };
}

/** The states the rebuild keeps in memory between writes. */
export interface StateCache {
  get(id: string): Evaluation | undefined;
  set(id: string, state: Evaluation): void;
  delete(id: string): void;
  clear(): void;
}

/**
 * At most about `size` states, the most recently written kept: two generations, the older
 * dropped whole when the newer is full (no per-entry bookkeeping).
 */
export function createStateCache(size: number): StateCache {
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

async function sendWrites(store: ProjectionStore, plan: PlannedBatch): Promise<WriteOutcome> {
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

/**
 * The checkpoints first, then SCAN + UNLINK of every other read-model key of the layout but the
 * fences (UNLINK frees big values off the main thread): on a cluster, SCAN on every primary and
 * one UNLINK per hash tag found (a partition's keys share a slot; no command crosses slots).
 */
async function deleteReadModels(redis: RedisClient, layout: KeyLayout): Promise<number> {
  const partitions = partitionNumbers(layout);
  const fences = new Set(partitions.map((p) => layout.fence(p)));
  // One DEL per partition: the checkpoints sit in different slots on a cluster.
  const checkpoints = await Promise.all(partitions.map((p) => redis.del(layout.checkpoint(p))));
  const unlinks: Promise<number>[] = [Promise.resolve(checkpoints.reduce((sum, n) => sum + n, 0))];
  for await (const found of scanKeys(redis, layout.scanPattern, SCAN_COUNT)) {
    // By hash tag, not by this layout's partitions: keys of a layout with more partitions (the
    // count was lowered) go too.
    const byPartition = new Map<string, string[]>();
    for (const key of found) {
      if (fences.has(key)) continue;
      const tag = /\{[^}]*\}/.exec(key)?.[0] ?? key;
      const keys = byPartition.get(tag);
      if (keys === undefined) byPartition.set(tag, [key]);
      else keys.push(key);
    }
    // Not awaited one by one: the next SCAN goes out while Redis unlinks.
    for (const keys of byPartition.values()) unlinks.push(redis.unlink(...keys));
  }
  const counts = await Promise.all(unlinks);
  return counts.reduce((sum, n) => sum + n, 0);
}
