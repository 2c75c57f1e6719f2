import type { RedisClient } from '../../../shared/redis';

/**
 * XRANGE stopped at a byte budget as well as a count, inside Redis: Redis has no byte limit of
 * its own for a range, and a count alone over entries of a few hundred KiB each made a reply of
 * hundreds of MiB. Entries are taken while the values before them sum to less than ARGV[3]
 * bytes, so the first always is and a reply exceeds the budget by less than one entry.
 *
 * KEYS[1] stream; ARGV[1] start id (`(` for exclusive), ARGV[2] most entries, ARGV[3] most
 * bytes. Returns {full, entries}: full is 1 when it stopped at a bound (more may be stored),
 * entries as XRANGE returns them.
 */
export const BOUNDED_RANGE_LUA = `#!lua flags=no-writes
local start = ARGV[1]
local left = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local out = {}
local bytes = 0
while left > 0 do
  local want = math.min(left, 64)
  local page = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', want)
  for _, entry in ipairs(page) do
    if bytes >= budget then return {1, out} end
    local fields = entry[2]
    for i = 2, #fields, 2 do bytes = bytes + #fields[i] end
    out[#out + 1] = entry
  end
  if #page < want then return {0, out} end
  left = left - #page
  start = '(' .. page[#page][1]
end
return {1, out}
`;

const COMMAND = 'crucibleBoundedRange';

/**
 * Each partition's share of a read's byte budget, so that a read over every partition stays
 * within it; never so small that an update of a typical size does not fit.
 */
export function partitionShare(totalBytes: number, partitions: number): number {
  return Math.max(64 * 1024, Math.floor(totalBytes / partitions));
}

/** One stream entry as XRANGE returns it with buffers: id, then the flat field/value list. */
export type StreamEntry = [id: Buffer, fields: Buffer[]];

export interface BoundedRange {
  readonly entries: StreamEntry[];
  /** Stopped at the count or the byte budget: more entries may follow. */
  readonly full: boolean;
}

export type BoundedRangeReader = (key: string, start: string, count: number, maxBytes: number) => Promise<BoundedRange>;

type ScriptRunner = (numKeys: number, ...args: (string | number)[]) => Promise<unknown>;

/** Binds the script to a connection (EVALSHA, loading it on NOSCRIPT). */
export function createBoundedRangeReader(redis: RedisClient): BoundedRangeReader {
  redis.defineCommand(COMMAND, { lua: BOUNDED_RANGE_LUA });
  const run = (redis as unknown as Record<string, ScriptRunner>)[`${COMMAND}Buffer`]?.bind(redis);
  if (run === undefined) throw new Error('ioredis did not define the bounded range script');
  return async (key, start, count, maxBytes) => {
    const [full, entries] = (await run(1, key, start, count, maxBytes)) as [number, StreamEntry[]];
    return { full: full === 1, entries };
  };
}
