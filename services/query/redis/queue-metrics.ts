import type { RedisClient } from '../../../shared/redis';
import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { parseCheckpoint } from '../read-models/checkpoints';
import { CREATED_DIGITS, facetMarker } from '../read-models/evaluation-list';
import { partitionNumbers, type Facet, type KeyLayout } from '../read-models/keys';
import { mappingOutages } from './errors';

/** Queued and running evaluations of one language, engine or executor. */
export interface QueueCount {
  queued: number;
  running: number;
}

/** What the queue is counted by (metadata facets are for lists). */
type QueueFacet = Exclude<Facet, 'metadata'>;

export interface QueueCounts {
  readonly queued: number;
  readonly running: number;
  readonly by: Readonly<Record<QueueFacet, ReadonlyMap<string, QueueCount>>>;
  /** Creation time of the oldest queued evaluation; undefined when none is queued. */
  readonly oldestQueued?: Date;
  /** Per partition, the checkpoint the counts were read at. */
  readonly checkpoints: readonly bigint[];
  /** Partitions one of whose indexes differs from its count: their counts are not the truth. */
  readonly damaged: readonly number[];
}

export interface QueueMetrics {
  /** The queue of `tenant`'s evaluations (its indexes only). */
  read(tenant: string): Promise<QueueCounts>;
}

/**
 * One partition's queue, read atomically: its checkpoint, then for the queued and running
 * indexes (the status' own and each facet's the counts name) the index key, its count and its
 * size, then the oldest queued member. A read-only script, as list pages are (a stalled Redis,
 * out of memory, still answers it); the facet keys it reads share the partition's hash tag.
 *
 * KEYS[1] the checkpoint, KEYS[2] the counts, KEYS[3] the queued index, KEYS[4] the running one,
 * KEYS[5] the facet marker (read-models/evaluation-list.ts `facetMarker`).
 */
const QUEUE_LUA = `#!lua flags=no-writes
local out = {redis.call('GET', KEYS[1]) or false, {}, redis.call('ZRANGE', KEYS[3], 0, 0), redis.call('GET', KEYS[5]) or false}
local counts = redis.call('HGETALL', KEYS[2])
local seen = {}
for i = 1, #counts, 2 do seen[counts[i]] = counts[i + 1] end
local function add(key)
  local n = #out[2]
  out[2][n + 1] = key
  out[2][n + 2] = seen[key] or '0'
  out[2][n + 3] = redis.call('ZCARD', key)
end
add(KEYS[3])
add(KEYS[4])
for key, _ in pairs(seen) do
  if key ~= KEYS[3] and key ~= KEYS[4] and (string.find(key, KEYS[3] .. ':', 1, true) == 1 or string.find(key, KEYS[4] .. ':', 1, true) == 1) then
    add(key)
  end
end
return out
`;

const COMMAND = 'crucibleQueue';

type QueueRunner = (
  numKeys: number,
  ...keys: string[]
) => Promise<[string | null, (string | number)[], string[], string | null]>;

/** The queue's counts from the status and facet indexes of every partition (read-models/evaluation-list.ts). */
export function createQueueMetrics(redis: RedisClient, layout: KeyLayout): QueueMetrics {
  redis.defineCommand(COMMAND, { lua: QUEUE_LUA });
  const run = (redis as unknown as Record<string, QueueRunner>)[COMMAND]?.bind(redis);
  if (run === undefined) throw new Error('ioredis did not define the queue script');
  const QUEUED = EvaluationStatus.EVALUATION_STATUS_QUEUED;
  const RUNNING = EvaluationStatus.EVALUATION_STATUS_RUNNING;

  return mappingOutages<QueueMetrics>('reading the queue', {
    async read(tenant) {
      const by: Record<QueueFacet, Map<string, QueueCount>> = {
        language: new Map(),
        engine: new Map(),
        executor: new Map(),
      };
      let queued = 0;
      let running = 0;
      let oldest: number | undefined;
      const damaged: number[] = [];
      const checkpoints = await Promise.all(
        partitionNumbers(layout).map(async (p) => {
          const [checkpoint, indexes, first, marker] = await run(
            5,
            layout.checkpoint(p),
            layout.indexCounts(p),
            layout.indexStatus(p, tenant, QUEUED),
            layout.indexStatus(p, tenant, RUNNING),
            layout.facets(p),
          );
          // Facet indexes not known whole: their counts are not the truth (the index repair fills them in).
          if (marker !== facetMarker(layout)) damaged.push(p);
          for (let i = 0; i < indexes.length; i += 3) {
            const key = String(indexes[i]);
            const count = Number(indexes[i + 1]);
            const size = Number(indexes[i + 2]);
            if (count !== size && !damaged.includes(p)) damaged.push(p);
            const index = layout.describeIndex(key);
            if (index?.status === undefined) continue;
            const isQueued = index.status === QUEUED;
            if (index.facet === 'metadata') continue;
            if (index.facet === undefined) {
              if (isQueued) queued += size;
              else running += size;
              continue;
            }
            const tally = by[index.facet].get(index.value) ?? { queued: 0, running: 0 };
            if (isQueued) tally.queued += size;
            else tally.running += size;
            if (tally.queued + tally.running > 0) by[index.facet].set(index.value, tally);
          }
          const member = first[0];
          if (member !== undefined) {
            const created = Number(member.slice(0, CREATED_DIGITS));
            if (oldest === undefined || created < oldest) oldest = created;
          }
          return parseCheckpoint(checkpoint);
        }),
      );
      return {
        queued,
        running,
        by,
        ...(oldest !== undefined ? { oldestQueued: new Date(oldest) } : {}),
        checkpoints,
        damaged: damaged.sort((a, b) => a - b),
      };
    },
  });
}
