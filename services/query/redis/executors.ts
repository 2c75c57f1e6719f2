import type { RedisClient } from '../../../shared/redis';
import { decodeExecutorHealth, executorKeys, type StoredExecutorHealth } from '../../../shared/executors';
import { mappingOutages } from './errors';

/** The executors whose last health report has not expired (shared/executors/keys.ts). */
export interface LiveExecutors {
  /** Ordered by executor id. */
  list(): Promise<StoredExecutorHealth[]>;
}

/** Reports read per MGET. */
const CHUNK = 500;

/**
 * Every executor `last-seen` names whose report key still exists (its TTL is the command side's
 * health TTL: an expired report is an executor gone). A report no reader can decode is skipped.
 */
export function createLiveExecutors(redis: RedisClient, prefix: string): LiveExecutors {
  const keys = executorKeys(prefix);
  return mappingOutages<LiveExecutors>('listing executors', {
    async list() {
      const ids = await redis.zrange(keys.lastSeen, 0, -1);
      const live: StoredExecutorHealth[] = [];
      for (let i = 0; i < ids.length; i += CHUNK) {
        const chunk = ids.slice(i, i + CHUNK);
        const reports = await redis.mget(...chunk.map((id) => keys.health(id)));
        for (const text of reports) {
          const report = text === null ? undefined : decodeExecutorHealth(text);
          if (report !== undefined) live.push(report);
        }
      }
      return live.sort((a, b) => (a.executorId < b.executorId ? -1 : a.executorId > b.executorId ? 1 : 0));
    },
  });
}
