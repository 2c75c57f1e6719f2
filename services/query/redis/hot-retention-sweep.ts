import { createHash } from 'node:crypto';
import type { RedisClient } from '../../../shared/redis';
import { isTerminalProto } from '../../../shared/domain';
import type { ProjectionStore } from '../projection/applier';
import { indexKeysOfEvaluation, listMember } from '../read-models/evaluation-list';
import { decodeRecord } from '../read-models/evaluation-record';
import { hotRetentionBound, pastHotRetention } from '../read-models/hot-retention';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';
import { WriteSet } from '../read-models/write-ops';

/** Members read, and evaluations taken out, per round trip. */
const PAGE = 500;

const sha1 = (bytes: Uint8Array): string => createHash('sha1').update(bytes).digest('hex');

export interface HotRetentionSweep {
  /** Takes every evaluation past HOT_RETENTION out of the read models; how many went. */
  sweep(): Promise<number>;
}

/**
 * Walks each partition's indexes of ended evaluations (every tenant's: the index counts name
 * them) from the oldest member up to the HOT_RETENTION bound, and takes out the evaluations past
 * it: the record and its index memberships, through the apply script, on condition that each
 * record is still the one read (`ifUnchanged`; an ended evaluation keeps no history): a step that changed one since (a late event) makes the page wait for the next
 * sweep. Index counts follow (the script's ZREM counts), so the index audit sees nothing amiss.
 * Safe on several replicas at once: the condition makes the second a no-op.
 */
export function createHotRetentionSweep(deps: {
  readonly redis: RedisClient;
  readonly store: ProjectionStore;
  readonly layout: KeyLayout;
  readonly hotMs: number;
  readonly clock?: () => number;
}): HotRetentionSweep {
  const { redis, store, layout, hotMs } = deps;
  const clock = deps.clock ?? Date.now;

  async function sweepIndex(partition: number, index: string, now: number): Promise<number> {
    let evicted = 0;
    for (let after = '-'; ;) {
      const members = await redis.zrangebylex(index, after, `(${hotRetentionBound(now, hotMs)}`, 'LIMIT', 0, PAGE);
      if (members.length === 0) return evicted;
      after = `(${members[members.length - 1] as string}`;
      const ids = members.map((member) => member.slice(member.indexOf(':') + 1));
      const recordKeys = ids.map((id) => layout.record(partition, id));
      const records = await redis.mgetBuffer(...recordKeys);
      const ops = new WriteSet();
      const decidedFrom = new Map<string, string>();
      records.forEach((bytes, i) => {
        if (bytes === null) return;
        const record = decodeRecord(bytes);
        if (!pastHotRetention(record, now, hotMs)) return;
        const member = listMember(record);
        for (const key of indexKeysOfEvaluation(layout, partition, record)) ops.zrem(key, member);
        ops.del(recordKeys[i] as string);
        decidedFrom.set(recordKeys[i] as string, sha1(bytes));
      });
      if (decidedFrom.size > 0) {
        const [result] = await store.write([
          { partition, expectedCheckpoint: 0n, newCheckpoint: 0n, ops, ifUnchanged: decidedFrom },
        ]);
        if (result === true) evicted += decidedFrom.size;
      }
      if (members.length < PAGE) return evicted;
    }
  }

  return {
    async sweep() {
      const now = clock();
      let evicted = 0;
      for (const partition of partitionNumbers(layout)) {
        const counted = Object.keys(await redis.hgetall(layout.indexCounts(partition)));
        for (const index of counted) {
          const described = layout.describeIndex(index);
          if (described?.status === undefined || described.facet !== undefined || !isTerminalProto(described.status))
            continue;
          evicted += await sweepIndex(partition, index, now);
        }
      }
      return evicted;
    },
  };
}
