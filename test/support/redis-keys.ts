import type { Redis } from 'ioredis';

/**
 * Deletes the keys matching `pattern` that `choose` picks (all by default), and `also`: SCAN,
 * then UNLINK — a flush of one prefix, or keys lost at random. Returns how many went.
 */
export async function deleteKeys(
  redis: Redis,
  pattern: string,
  choose: (key: string) => boolean = () => true,
  also: readonly string[] = [],
): Promise<number> {
  let cursor = '0';
  let deleted = also.length > 0 ? await redis.unlink(...also) : 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    const doomed = keys.filter(choose);
    if (doomed.length > 0) deleted += await redis.unlink(...doomed);
  } while (cursor !== '0');
  return deleted;
}
