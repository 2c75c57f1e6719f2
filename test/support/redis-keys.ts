import { scanKeys, type RedisClient } from '../../shared/redis';

/**
 * Deletes the keys matching `pattern` that `choose` picks (all by default), and `also`: SCAN,
 * then UNLINK — a flush of one prefix, or keys lost at random. Returns how many went.
 */
export async function deleteKeys(
  redis: RedisClient,
  pattern: string,
  choose: (key: string) => boolean = () => true,
  also: readonly string[] = [],
): Promise<number> {
  // One UNLINK per key: on a cluster the keys sit in different slots.
  const unlink = async (keys: readonly string[]): Promise<number> =>
    (await Promise.all(keys.map((key) => redis.unlink(key)))).reduce((sum, n) => sum + n, 0);
  let deleted = await unlink(also);
  for await (const keys of scanKeys(redis, pattern, 1000)) deleted += await unlink(keys.filter(choose));
  return deleted;
}
