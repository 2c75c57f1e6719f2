import type { Redis } from 'ioredis';
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
 * read its configuration (a managed one, CONFIG renamed) is only warned about.
 */
export async function checkMemoryPolicy(redis: Redis, allowEviction: boolean, logger: Logger): Promise<void> {
  let policy: string | undefined;
  try {
    const reply = (await redis.config('GET', 'maxmemory-policy')) as string[];
    policy = reply[1];
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
