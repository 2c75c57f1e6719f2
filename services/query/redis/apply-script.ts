import type { Redis } from 'ioredis';
import type { EncodedScriptCall } from '../read-models/write-ops';

/**
 * The one script that writes a partition of the read models: it compares the partition's
 * checkpoint with the one the projector read, and only if it is unchanged runs every write op
 * and moves the checkpoint, atomically (Redis runs a script without interleaving). Another
 * replica that got there first makes it return the checkpoint it found instead.
 *
 * Ops are fixed-arity (see read-models/write-ops.ts). XADD runs under pcall: an entry id at or
 * below the stream's top can only mean the entry is already there (keys deleted by hand), and
 * must not abort the script half-way (Redis does not roll a script back).
 */
export const APPLY_LUA = `
local current = redis.call('GET', KEYS[1])
if not current then current = '0' end
if current ~= ARGV[1] then return {0, current} end
local i = 4
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  local key = KEYS[tonumber(ARGV[i + 1])]
  if op == 'S' then
    redis.call('SET', key, ARGV[i + 2]); i = i + 3
  elseif op == 'Z' then
    redis.call('ZADD', key, 0, ARGV[i + 2]); i = i + 3
  elseif op == 'R' then
    redis.call('ZREM', key, ARGV[i + 2]); i = i + 3
  elseif op == 'L' then
    redis.call('RPUSH', key, ARGV[i + 2]); i = i + 3
  elseif op == 'X' then
    redis.pcall('XADD', key, 'MAXLEN', '~', ARGV[3], ARGV[i + 2], 'u', ARGV[i + 3]); i = i + 4
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return {1}
`;

const COMMAND = 'crucibleApplyPartition';

type ScriptRunner = (numKeys: number, ...args: (string | Buffer)[]) => Promise<unknown>;

/**
 * Binds the apply script to a connection (EVALSHA, loading it on NOSCRIPT). Returns true when
 * applied, or the checkpoint found instead.
 */
export function createApplyScript(redis: Redis): (call: EncodedScriptCall) => Promise<true | bigint> {
  redis.defineCommand(COMMAND, { lua: APPLY_LUA });
  const run = (redis as unknown as Record<string, ScriptRunner>)[COMMAND]?.bind(redis);
  if (run === undefined) throw new Error('ioredis did not define the apply script');
  return async ({ keys, args }) => {
    const reply = (await run(keys.length, ...keys, ...args)) as [number, string?];
    if (reply[0] === 1) return true;
    return BigInt(reply[1] ?? '0');
  };
}
