import type { RedisClient } from '../../../shared/redis';
import type { ExecutorConfig } from '../../../shared/config';
import { UnavailableError } from '../../../shared/errors';
import { encodeExecutorHealth, executorKeys, type ExecutorHealthReport } from '../../../shared/executors';

const DAY_MS = 24 * 3600 * 1000;

/** Executor health in Redis (key layout and stored form: shared/executors). */
export interface RedisExecutorHealth {
  /**
   * Stores the report for the health TTL and moves the executor's last-seen time forward, in
   * one MULTI; UnavailableError when Redis does not take it (the caller reports again).
   */
  /** Keeps `report` of an executor of `tenant`. */
  record(report: ExecutorHealthReport, reportedAt: Date, tenant: string): Promise<void>;
  /** When each of `executorIds` last reported (ms since the epoch); absent: never, or forgotten. */
  lastSeen(executorIds: readonly string[]): Promise<ReadonlyMap<string, number>>;
}

/**
 * Every failure here is Redis not answering or not taking the write (the connection has no
 * offline queue, so an outage fails at once), and a report is safe to send again: the caller
 * hears UNAVAILABLE, retry, whatever Redis said.
 */
function unavailable(what: string, err: unknown): UnavailableError {
  return new UnavailableError(`Redis is unavailable (${what}); retry`, { cause: err });
}

function checkedExec(replies: [Error | null, unknown][] | null): void {
  if (replies === null) throw new Error('the MULTI was aborted');
  for (const [err] of replies) if (err !== null) throw err;
}

/**
 * `redis` must be created with `enableOfflineQueue: false` (services/command/main.ts), so that
 * an outage fails a report at once instead of holding it until Redis is back.
 */
export function createRedisExecutorHealth(
  redis: RedisClient,
  keyPrefix: string,
  config: ExecutorConfig,
): RedisExecutorHealth {
  const keys = executorKeys(keyPrefix);
  const ttlMs = config.healthTtlSeconds * 1000;
  // Last-seen times are kept far longer than any judgement needs (TTL + grace), so that a reaper
  // that could not sweep for hours still knows who went silent; an executor forgotten after that
  // leaves its evaluations to the timeout rule alone. Pruned by each report: the set holds the
  // executors seen within a day or so, whatever the churn of executor ids.
  const retentionMs = Math.max(DAY_MS, 10 * (config.healthTtlSeconds + config.lostGraceSeconds) * 1000);
  return {
    async record(report, reportedAt, tenant) {
      const at = reportedAt.getTime();
      try {
        const replies = await redis
          .multi()
          .set(keys.health(report.executorId), encodeExecutorHealth({ ...report, reportedAt, tenant }), 'PX', ttlMs)
          // GT: a report that arrives late through another instance (whose clock is behind) never
          // moves the executor's last-seen time back.
          .zadd(keys.lastSeen, 'GT', at, report.executorId)
          .zremrangebyscore(keys.lastSeen, '-inf', `(${at - retentionMs}`)
          .exec();
        checkedExec(replies);
      } catch (err) {
        throw unavailable('the health report was not stored', err);
      }
    },
    async lastSeen(executorIds) {
      const seen = new Map<string, number>();
      if (executorIds.length === 0) return seen;
      let scores: (string | null)[];
      try {
        scores = await redis.zmscore(keys.lastSeen, ...executorIds);
      } catch (err) {
        throw unavailable("reading executors' last-seen times", err);
      }
      executorIds.forEach((id, i) => {
        const score = scores[i];
        if (score !== null && score !== undefined) seen.set(id, Number(score));
      });
      return seen;
    },
  };
}
