import { randomBytes } from 'node:crypto';
import type { RedisClient } from '../../../shared/redis';
import type { Logger } from '../../../shared/logging';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';

/**
 * The fence a rebuild holds over every partition while it deletes and rewrites the read models:
 * the apply script refuses any writer without its token, so live replicas cannot write into
 * keys the rebuild is deleting (a checkpoint that survived next to deleted data), nor race its
 * writes. They retry with backoff and catch up once it is released.
 *
 * Each partition's fence is a key with a time to live, renewed while the rebuild runs: a
 * rebuild that dies releases it by itself within `ttlMs`.
 */
export interface RebuildFence {
  readonly token: string;
  /** Stops renewing and deletes the fence keys that still hold this token. */
  release(): Promise<void>;
}

/** Another rebuild holds the read models. */
export class RebuildRunningError extends Error {
  override name = 'RebuildRunningError';
}

const DEFAULT_TTL_MS = 30_000;

/** Sets the TTL (ARGV[2] ms) of every fence key (KEYS) that holds ARGV[1]; deletes them when ARGV[2] is 0. */
const RENEW_LUA = `
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    if ARGV[2] == '0' then redis.call('DEL', key) else redis.call('PEXPIRE', key, ARGV[2]) end
  end
end
return 0
`;

/**
 * Takes the fence of every partition (SET NX), or throws RebuildRunningError (after giving
 * back what it took) when another rebuild holds one. One command per partition: fence keys live
 * in their partition's slot, as the apply script that reads them needs.
 */
export async function takeRebuildFence(
  redis: RedisClient,
  layout: KeyLayout,
  logger: Logger,
  ttlMs = DEFAULT_TTL_MS,
): Promise<RebuildFence> {
  const token = `rebuild-${randomBytes(8).toString('hex')}`;
  const keys = partitionNumbers(layout).map((p) => layout.fence(p));
  const each = (value: string): Promise<unknown[]> =>
    // One key per call: fence keys sit in different slots on a cluster.
    Promise.all(keys.map((key) => redis.eval(RENEW_LUA, 1, key, token, value)));
  const taken = await Promise.all(keys.map((key) => redis.set(key, token, 'PX', ttlMs, 'NX')));
  if (taken.some((reply) => reply !== 'OK')) {
    await each('0');
    const holder = await redis.get(keys[taken.findIndex((reply) => reply !== 'OK')] ?? '');
    throw new RebuildRunningError(
      `another rebuild of the read models is running (${holder ?? 'just ended'}); try again once it is done`,
    );
  }
  const renew = setInterval(
    () => {
      each(String(ttlMs)).catch((err: unknown) => logger.warn('could not renew the rebuild fence', { err }));
    },
    Math.max(100, Math.floor(ttlMs / 3)),
  );
  renew.unref();
  return {
    token,
    async release() {
      clearInterval(renew);
      await each('0');
    },
  };
}
