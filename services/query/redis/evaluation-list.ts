import type { Redis } from 'ioredis';
import { EvaluationStatus, type Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import { CREATED_DIGITS, encodePageToken, mergePages, type EvaluationList } from '../read-models/evaluation-list';
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
 * One partition's page of an index, with the index's size and its count (redis/index-counts.ts),
 * read atomically. A read-only script rather than a MULTI: out of memory, Redis refuses even the
 * reads queued in a MULTI, and lists must go on answering at the checkpoint while the read
 * models are stalled (docs/read-models.md, "When Redis refuses writes").
 *
 * KEYS[1] the index, KEYS[2] the counts; ARGV[1] the exclusive upper bound (`+` or `(member`),
 * ARGV[2] how many. Returns {members, size, count or false}.
 */
const INDEX_PAGE_LUA = `#!lua flags=no-writes
local page = redis.call('ZRANGE', KEYS[1], ARGV[1], '-', 'BYLEX', 'REV', 'LIMIT', 0, tonumber(ARGV[2]))
return {page, redis.call('ZCARD', KEYS[1]), redis.call('HGET', KEYS[2], KEYS[1])}
`;

const INDEX_PAGE_COMMAND = 'crucibleIndexPage';

type IndexPageRunner = (numKeys: number, ...args: (string | number)[]) => Promise<[string[], number, string | null]>;

export function createEvaluationList(
  redis: Redis,
  layout: KeyLayout,
  records: EvaluationRecords,
  pageBytes = LIST_PAGE_BYTES,
): EvaluationList {
  const indexKey = (partition: number, status: EvaluationStatus): string =>
    status === EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED
      ? layout.indexAll(partition)
      : layout.indexStatus(partition, status);
  const memberId = (member: string): string => member.slice(CREATED_DIGITS + 1);
  redis.defineCommand(INDEX_PAGE_COMMAND, { lua: INDEX_PAGE_LUA });
  const indexPage = (redis as unknown as Record<string, IndexPageRunner>)[INDEX_PAGE_COMMAND]?.bind(redis);
  if (indexPage === undefined) throw new Error('ioredis did not define the index page script');

  return mappingOutages<EvaluationList>('listing evaluations', {
    async page(status, pageSize, cursor) {
      const max = cursor === undefined ? '+' : `(${cursor.after}`;
      const partitions = partitionNumbers(layout);
      // An index that differs from its count lost members (or got strays): its page is not the truth.
      const damaged: number[] = [];
      const pages = await Promise.all(
        partitions.map(async (p) => {
          const key = indexKey(p, status);
          const [page, size, count] = await indexPage(2, key, layout.indexCounts(p), max, pageSize + 1);
          // No count: an index no step has touched yet (empty), or counts a version before them
          // did not keep, which the index audit makes at start.
          if (count !== null && Number(count) !== size) damaged.push(p);
          return page;
        }),
      );
      const { members, hasMore } = mergePages(pages, pageSize);
      const byPartition = idsByPartition(layout, members.map(memberId));
      const found = new Map<string, Encoded<Evaluation>>();
      await Promise.all(
        [...byPartition].map(async ([p, ids]) => {
          const evaluations = await records.getMany(p, ids);
          evaluations.forEach((e, i) => {
            if (e !== undefined) found.set(ids[i] ?? '', e);
          });
        }),
      );
      // Index and record are read in two steps; an evaluation whose status changed in between
      // no longer matches the filter and is left out (the page may then be one shorter).
      const missing: string[] = [];
      const evaluations: Encoded<Evaluation>[] = [];
      let bytes = 0;
      // The page ends at the last member it considered: the budget may end it early.
      let last = members[members.length - 1];
      let more = hasMore;
      for (const [i, m] of members.entries()) {
        const e = found.get(memberId(m));
        if (e === undefined) {
          missing.push(memberId(m));
          continue;
        }
        // A record no client could decode (reported by the records reader) is left out.
        if (e.unreadable !== undefined) continue;
        if (status !== EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED && e.message.status !== status) continue;
        if (evaluations.length > 0 && bytes + e.bytes.length > pageBytes) {
          last = members[i - 1];
          more = true;
          break;
        }
        evaluations.push(e);
        bytes += e.bytes.length;
      }
      return {
        evaluations,
        nextPageToken: more && last !== undefined ? encodePageToken({ status, after: last }) : '',
        missing,
        damaged,
      };
    },
  });
}
