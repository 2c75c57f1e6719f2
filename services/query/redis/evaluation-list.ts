import type { Redis } from 'ioredis';
import { EvaluationStatus, type Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import { CREATED_DIGITS, encodePageToken, mergePages, type EvaluationList } from '../read-models/evaluation-list';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';
import type { Encoded } from '../wire/encoded';
import { mappingOutages } from './errors';

/** List pages read from the indexes and records in Redis (read-models/evaluation-list.ts). */
export function createEvaluationList(redis: Redis, layout: KeyLayout, records: EvaluationRecords): EvaluationList {
  const indexKey = (partition: number, status: EvaluationStatus): string =>
    status === EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED
      ? layout.indexAll(partition)
      : layout.indexStatus(partition, status);
  const memberId = (member: string): string => member.slice(CREATED_DIGITS + 1);

  return mappingOutages<EvaluationList>('listing evaluations', {
    async page(status, pageSize, cursor) {
      const max = cursor === undefined ? '+' : `(${cursor.after}`;
      const partitions = partitionNumbers(layout);
      const pages = await Promise.all(
        partitions.map((p) => redis.zrange(indexKey(p, status), max, '-', 'BYLEX', 'REV', 'LIMIT', 0, pageSize + 1)),
      );
      const { members, hasMore } = mergePages(pages, pageSize);
      const byPartition = new Map<number, string[]>();
      for (const member of members) {
        const id = memberId(member);
        const p = layout.partitionOf(id);
        byPartition.set(p, [...(byPartition.get(p) ?? []), id]);
      }
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
      const evaluations = members.flatMap((m) => {
        const e = found.get(memberId(m));
        if (e === undefined) {
          missing.push(memberId(m));
          return [];
        }
        // A record no client could decode (reported by the records reader) is left out.
        if (e.unreadable !== undefined) return [];
        return status === EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED || e.message.status === status ? [e] : [];
      });
      const last = members[members.length - 1];
      return {
        evaluations,
        nextPageToken: hasMore && last !== undefined ? encodePageToken({ status, after: last }) : '',
        missing,
      };
    },
  });
}
