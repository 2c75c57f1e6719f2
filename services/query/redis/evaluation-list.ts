import type { RedisClient } from '../../../shared/redis';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { parseCheckpoint } from '../read-models/checkpoints';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import {
  CREATED_DIGITS,
  facetMarker,
  indexKeysOfFilter,
  matchesFilter,
  memberRange,
  mergePages,
  type EvaluationList,
  type ListFilter,
} from '../read-models/evaluation-list';
import { idsByPartition, partitionNumbers, type KeyLayout } from '../read-models/keys';
import type { Encoded } from '../wire/encoded';
import { mappingOutages } from './errors';

/** List pages read from the indexes and records in Redis (read-models/evaluation-list.ts). */
/**
 * Record bytes a page holds at most (beside its count): standard clients receive at most 4 MiB
 * per message by default, and a thousand records near the metadata limit would be tens of MiB.
 * A page always holds at least one record; one larger than this goes alone.
 */
export const LIST_PAGE_BYTES = 3 * 1024 * 1024;

/**
 * One partition's pages of the indexes a filter reads, each with the index's size and its count
 * (redis/index-counts.ts), read atomically. A read-only script rather than a MULTI: out of
 * memory, Redis refuses even the reads queued in a MULTI, and lists must go on answering at the
 * checkpoint while the read models are stalled (docs/read-models.md, "When Redis refuses writes").
 *
 * KEYS[1] the counts, KEYS[2] the facet marker, KEYS[3..] the indexes; ARGV[1] and ARGV[2] the
 * low and high BYLEX bounds, ARGV[3] how many, ARGV[4] '1' for newest first. Returns the marker
 * (or false), then per index {members, size, count or false}.
 */
const INDEX_PAGE_LUA = `#!lua flags=no-writes
local out = {redis.call('GET', KEYS[2])}
for i = 3, #KEYS do
  local page
  if ARGV[4] == '1' then
    page = redis.call('ZRANGE', KEYS[i], ARGV[2], ARGV[1], 'BYLEX', 'REV', 'LIMIT', 0, tonumber(ARGV[3]))
  else
    page = redis.call('ZRANGE', KEYS[i], ARGV[1], ARGV[2], 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
  end
  out[#out + 1] = {page, redis.call('ZCARD', KEYS[i]), redis.call('HGET', KEYS[1], KEYS[i])}
end
return out
`;

/**
 * How many members of each index a filter reads lie in a BYLEX range (O(log n) each), with the
 * index's size and count, the partition's checkpoint and facet marker, read atomically. KEYS[1]
 * the counts, KEYS[2] the checkpoint, KEYS[3] the facet marker, KEYS[4..] the indexes; ARGV[1]
 * and ARGV[2] the bounds. Returns {checkpoint or false, marker or false, {in range, size, count
 * or false}...}.
 */
const INDEX_COUNT_LUA = `#!lua flags=no-writes
local out = {redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}
for i = 4, #KEYS do
  out[#out + 1] = {redis.call('ZLEXCOUNT', KEYS[i], ARGV[1], ARGV[2]), redis.call('ZCARD', KEYS[i]),
    redis.call('HGET', KEYS[1], KEYS[i])}
end
return out
`;

const INDEX_PAGE_COMMAND = 'crucibleIndexPage';
const INDEX_COUNT_COMMAND = 'crucibleIndexCount';

type IndexRead = [members: string[], size: number, count: string | null];
type IndexPageRunner = (numKeys: number, ...args: (string | number)[]) => Promise<[string | null, ...IndexRead[]]>;
type IndexCountRunner = (
  numKeys: number,
  ...args: string[]
) => Promise<
  [
    checkpoint: string | null,
    marker: string | null,
    ...indexes: [inRange: number, size: number, count: string | null][],
  ]
>;

/**
 * Rounds of index reads a page with facets checked on the records (a filter on more than one)
 * may take before it answers with what it found: a page may then hold fewer than asked while
 * more follow, and its token goes on from the last member it looked at.
 */
const FILTER_ROUNDS = 8;

export function createEvaluationList(
  redis: RedisClient,
  layout: KeyLayout,
  records: EvaluationRecords,
  pageBytes = LIST_PAGE_BYTES,
): EvaluationList {
  const memberId = (member: string): string => member.slice(CREATED_DIGITS + 1);
  const script = <T>(name: string, lua: string): T => {
    redis.defineCommand(name, { lua });
    const run = (redis as unknown as Record<string, T>)[name];
    if (run === undefined) throw new Error(`ioredis did not define the ${name} script`);
    return (run as unknown as (...args: unknown[]) => unknown).bind(redis) as T;
  };
  const indexPage = script<IndexPageRunner>(INDEX_PAGE_COMMAND, INDEX_PAGE_LUA);
  const indexCount = script<IndexCountRunner>(INDEX_COUNT_COMMAND, INDEX_COUNT_LUA);

  /** The next members of every index the filter reads, merged in its order; damaged partitions noted. */
  const members = async (
    filter: ListFilter,
    limit: number,
    after: string | undefined,
    damaged: Set<number>,
  ): Promise<{ members: string[]; hasMore: boolean }> => {
    const { low, high } = memberRange(filter, after);
    const rev = filter.order === 'newest' ? '1' : '0';
    const pages = await Promise.all(
      partitionNumbers(layout).map(async (p) => {
        const keys = indexKeysOfFilter(layout, p, filter);
        const [marker, ...read] = await indexPage(
          keys.length + 2,
          layout.indexCounts(p),
          layout.facets(p),
          ...keys,
          low,
          high,
          limit + 1,
          rev,
        );
        // Facet indexes not known whole (built before they existed, or before a metadata key was
        // indexed) are not the truth either: the index repair fills them in. Nor is any index of
        // a partition marked by an older layout (v1's were not per tenant); a partition without a
        // marker has had no projection step, and its indexes are empty.
        if ((filter.facets.length > 0 || marker !== null) && marker !== facetMarker(layout)) damaged.add(p);
        return read.map(([page, size, count]) => {
          // No count: an index no step has touched yet (empty), or counts a version before them
          // did not keep, which the index audit makes at start.
          if (count !== null && Number(count) !== size) damaged.add(p);
          return page;
        });
      }),
    );
    return mergePages(pages.flat(), limit, filter.order);
  };

  const recordsOf = async (page: readonly string[]): Promise<Map<string, Encoded<Evaluation>>> => {
    const found = new Map<string, Encoded<Evaluation>>();
    await Promise.all(
      [...idsByPartition(layout, page.map(memberId))].map(async ([p, ids]) => {
        const evaluations = await records.getMany(p, ids);
        evaluations.forEach((e, i) => {
          if (e !== undefined) found.set(ids[i] ?? '', e);
        });
      }),
    );
    return found;
  };

  return mappingOutages<EvaluationList>('listing evaluations', {
    async page(filter, pageSize, after) {
      const damaged = new Set<number>();
      const missing: string[] = [];
      const evaluations: Encoded<Evaluation>[] = [];
      let bytes = 0;
      // The page ends at the last member it considered (a budget or a round limit may end it early).
      let last = after;
      let more: boolean;
      for (let round = 1; ; round += 1) {
        const next = await members(filter, pageSize - evaluations.length, last, damaged);
        const found = await recordsOf(next.members);
        let full = false;
        for (const m of next.members) {
          const e = found.get(memberId(m));
          if (e === undefined) missing.push(memberId(m));
          // A record no client could decode (reported by the records reader) is left out, and so
          // is one whose status (or executor) moved between the index read and the record read.
          else if (e.unreadable === undefined && matchesFilter(e.message, filter)) {
            if (evaluations.length > 0 && bytes + e.bytes.length > pageBytes) {
              full = true;
              break;
            }
            evaluations.push(e);
            bytes += e.bytes.length;
          }
          last = m;
        }
        more = full || next.hasMore;
        if (full || !next.hasMore || evaluations.length >= pageSize || round >= FILTER_ROUNDS) break;
      }
      return {
        evaluations,
        next: more && last !== undefined ? last : undefined,
        missing,
        damaged: [...damaged].sort((a, b) => a - b),
      };
    },

    async count(filter) {
      const { low, high } = memberRange(filter, undefined);
      const damaged = new Set<number>();
      let count = 0;
      const checkpoints = await Promise.all(
        partitionNumbers(layout).map(async (p) => {
          const keys = indexKeysOfFilter(layout, p, filter);
          const [at, marker, ...indexes] = await indexCount(
            keys.length + 3,
            layout.indexCounts(p),
            layout.checkpoint(p),
            layout.facets(p),
            ...keys,
            low,
            high,
          );
          if ((filter.facets.length > 0 || marker !== null) && marker !== facetMarker(layout)) damaged.add(p);
          for (const [inRange, size, counted] of indexes) {
            if (counted !== null && Number(counted) !== size) damaged.add(p);
            count += inRange;
          }
          return parseCheckpoint(at);
        }),
      );
      return {
        count,
        exact: filter.facets.length <= 1,
        checkpoints,
        damaged: [...damaged].sort((a, b) => a - b),
      };
    },
  });
}
