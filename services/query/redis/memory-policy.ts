import { onEveryPrimary, type RedisClient } from '../../../shared/redis';
import type { Logger } from '../../../shared/logging';

/** The query side refuses to start on a Redis that would evict its keys. */
export class EvictingRedisError extends Error {
  override name = 'EvictingRedisError';
}

/**
 * Checks Redis' `maxmemory-policy` at start. An evicting policy (`allkeys-*`, `volatile-*`)
 * removes read-model keys silently when memory runs out: refused, unless `allowEviction`, when
 * lost keys are found by reads and rewritten from the log like keys deleted by hand (a slower,
 * noisier mode, stated in the log). `noeviction` makes a full Redis refuse writes instead, which
 * the projector reports as a stall and recovers from by itself. A Redis that does not let us
 * read its configuration (a managed one, CONFIG renamed) is only warned about. On a cluster
 * every primary is asked; the first evicting one is reported.
 */
export async function checkMemoryPolicy(redis: RedisClient, allowEviction: boolean, logger: Logger): Promise<void> {
  let policy: string | undefined;
  try {
    const replies = await onEveryPrimary(redis, (node) => node.config('GET', 'maxmemory-policy') as Promise<string[]>);
    const policies = replies.map((reply) => reply[1]);
    policy = policies.find((p) => p !== undefined && p !== 'noeviction') ?? policies[0];
  } catch (err) {
    logger.warn('could not read Redis maxmemory-policy; make sure it is noeviction', { err });
    return;
  }
  if (policy === undefined || policy === 'noeviction') return;
  const message =
    `Redis evicts keys when full (maxmemory-policy ${policy}): read-model keys would disappear. ` +
    'Set maxmemory-policy noeviction on this Redis';
  if (!allowEviction) throw new EvictingRedisError(`${message}, or REDIS_ALLOW_EVICTION=true to run anyway.`);
  logger.warn(`${message}; running anyway (REDIS_ALLOW_EVICTION): lost keys are repaired when a read finds them`, {
    policy,
  });
}
