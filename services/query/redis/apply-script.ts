import type { RedisClient } from '../../../shared/redis';
import type { EncodedScriptCall } from '../read-models/write-ops';

/**
 * The one script that writes a partition of the read models: it compares the position of the
 * partition's checkpoint with the one the projector read, and only if it is unchanged runs
 * every write op and sets the checkpoint (position and event, ARGV[2]; an empty ARGV[2] leaves
 * it as it is: a repair), atomically (Redis runs a script without interleaving). Another
 * replica that got there first makes it return the position it found instead. While a rebuild
 * holds the partition's fence (KEYS[2]), only a writer with its token (ARGV[5]) gets through:
 * the others are told the fence is up and write nothing. KEYS[3] counts the members the script
 * put into each index (added minus removed, as ZADD and ZREM report what they changed), so that
 * a member deleted by anyone else shows as an index smaller than its count
 * (redis/index-counts.ts).
 *
 * ARGV[4] holds the ops, packed as one MessagePack array (read-models/write-ops.ts): per op,
 * code, key index, item count, items. `V` refuses the write unless each key it names (key index
 * and SHA-1 per key; its own key index unused) still holds a string of that digest: it comes first,
 * and an ARGV[1] of '*' stands for any checkpoint (a write conditioned on records instead). `M` sets `count` strings (key index and value per
 * string; the op's own key index is unused), `Z` adds members with score 0, `R` removes members, `L` puts values into a list from the index
 * its first item gives (entries already there are replaced in place, `LSET`, and any past the
 * last one put are trimmed, so an entry written again replaces itself; a value item that is a number stands for the item at that place: an update the write
 * also appends to the change log), `X` appends `count`
 * stream entries (id, update, eval id, status, revision), `D` deletes its key (no items), `C`
 * sets its key's count to the index's size (no items). XADD runs under pcall: an entry id at or below the stream's top can only mean the
 * entry is already there (keys deleted by hand), and must not abort the script half-way (Redis
 * does not roll a script back).
 */
// The shebang makes Redis refuse the whole script before it starts when it is out of memory
// (maxmemory, noeviction): a script without one fails at its first write that adds data,
// after the ones before it (a DEL, an LTRIM, an XADD under pcall) have run. It also requires
// every key to be declared in KEYS, which they are.
const APPLY_LUA = `#!lua
local fence = redis.call('GET', KEYS[2])
if fence and fence ~= ARGV[5] then return {2, fence} end
local current = redis.call('GET', KEYS[1])
local at = '0'
if current then at = string.match(current, '^%d+') or '0' end
if ARGV[1] ~= '*' and at ~= ARGV[1] then return {0, at} end
if ARGV[4] ~= '' then
  local ops = cmsgpack.unpack(ARGV[4])
  local i = 1
  local n = #ops
  while i <= n do
    local op = ops[i]
    local key = KEYS[ops[i + 1]]
    local count = ops[i + 2]
    local first = i + 3
    local last = first + count - 1
    if op == 'V' then
      -- Conditions, sent before every write: a key that changed refuses the whole write.
      last = first + 2 * count - 1
      for j = first, last, 2 do
        local value = redis.call('GET', KEYS[ops[j]])
        if not value or redis.sha1hex(value) ~= ops[j + 1] then return {0, at} end
      end
    elseif op == 'M' then
      last = first + 2 * count - 1
      local kv = {}
      for j = first, last, 2 do
        kv[#kv + 1] = KEYS[ops[j]]
        kv[#kv + 1] = ops[j + 1]
      end
      redis.call('MSET', unpack(kv))
    elseif op == 'Z' then
      local scored = {}
      for j = first, last do
        scored[#scored + 1] = '0'
        scored[#scored + 1] = ops[j]
      end
      local added = redis.call('ZADD', key, unpack(scored))
      if added > 0 then redis.call('HINCRBY', KEYS[3], key, added) end
    elseif op == 'R' then
      local removed = redis.call('ZREM', key, unpack(ops, first, last))
      if removed > 0 then redis.call('HINCRBY', KEYS[3], key, -removed) end
    elseif op == 'C' then
      redis.call('HSET', KEYS[3], key, redis.call('ZCARD', key))
    elseif op == 'L' then
      -- The list from index ops[first] on is rewritten: an entry put again replaces itself (in
      -- place: the key is never deleted, which would tell keyspace watchers it was lost).
      local at = ops[first]
      local length = redis.call('LLEN', key)
      local values = {}
      for j = first + 1, last do
        local value = ops[j]
        if type(value) == 'number' then value = ops[value] end
        local index = at + (j - first - 1)
        if index < length then redis.call('LSET', key, index, value) else values[#values + 1] = value end
      end
      if #values > 0 then redis.call('RPUSH', key, unpack(values)) end
      local through = at + (last - first) - 1
      if length > through + 1 then redis.call('LTRIM', key, 0, through) end
    elseif op == 'D' then
      redis.call('UNLINK', key)
    elseif op == 'X' then
      last = first + 5 * count - 1
      for j = first, last, 5 do
        redis.pcall('XADD', key, 'MAXLEN', '~', ARGV[3], ops[j], 'u', ops[j + 1], 'e', ops[j + 2], 's', ops[j + 3], 'r', ops[j + 4])
      end
    else
      return redis.error_reply('unknown op ' .. tostring(op))
    end
    i = last + 1
  end
end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2]) end
return {1}
`;

const COMMAND = 'crucibleApplyPartition';

type ScriptRunner = (numKeys: number, ...args: (string | Buffer | (string | Buffer)[])[]) => Promise<unknown>;

/** A rebuild holds the partition (its fence): nothing was written. */
export class FencedError extends Error {
  override name = 'FencedError';
}

/**
 * Binds the apply script to a connection (EVALSHA, loading it on NOSCRIPT). Returns true when
 * applied, or the checkpoint found instead; throws FencedError while a rebuild holds the
 * partition for another writer.
 */
export function createApplyScript(redis: RedisClient): (call: EncodedScriptCall) => Promise<true | bigint> {
  redis.defineCommand(COMMAND, { lua: APPLY_LUA });
  const run = (redis as unknown as Record<string, ScriptRunner>)[COMMAND]?.bind(redis);
  if (run === undefined) throw new Error('ioredis did not define the apply script');
  return async ({ keys, args }) => {
    // Arrays are flattened by ioredis: no spread of tens of thousands of arguments.
    const reply = (await run(keys.length, keys, args)) as [number, string?];
    if (reply[0] === 1) return true;
    if (reply[0] === 2) throw new FencedError('a rebuild of the read models holds the partition; retrying later');
    return BigInt(reply[1] ?? '0');
  };
}
