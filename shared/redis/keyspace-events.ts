import type { Redis } from 'ioredis';

/** Keyspace events the query side follows (lost keys): E (keyevent channels), g (DEL, UNLINK …), x (expired), e (evicted). */
export const KEYSPACE_EVENT_FLAGS: readonly string[] = ['E', 'g', 'x', 'e'];

/**
 * `current` (a `notify-keyspace-events` value) with every flag the query side needs added, or
 * undefined when it has them all. 'A' stands for every class but E, K, m and n.
 */
export function withKeyspaceEventFlags(current: string): string | undefined {
  const has = (flag: string): boolean => current.includes(flag) || (flag !== 'E' && current.includes('A'));
  const missing = KEYSPACE_EVENT_FLAGS.filter((flag) => !has(flag));
  return missing.length === 0 ? undefined : `${current}${missing.join('')}`;
}

/** Switches on what KEYSPACE_EVENT_FLAGS need on `redis`, keeping the flags already on (CONFIG GET/SET). */
export async function enableKeyspaceEvents(redis: Redis): Promise<void> {
  const reply = (await redis.config('GET', 'notify-keyspace-events')) as string[];
  const wanted = withKeyspaceEventFlags(reply[1] ?? '');
  if (wanted !== undefined) await redis.config('SET', 'notify-keyspace-events', wanted);
}
