import type { Redis } from 'ioredis';
import type { Logger } from '../../../shared/logging';
import type { ProjectionStore } from '../projection/applier';
import { parseCheckpoint } from '../read-models/checkpoints';
import { decodeRecord } from '../read-models/evaluation-record';
import { CREATED_DIGITS, listMember } from '../read-models/evaluation-list';
import { INDEXED_STATUSES, partitionNumbers, type KeyLayout } from '../read-models/keys';
import { WriteSet } from '../read-models/write-ops';

/**
 * The indexes' own loss detector and repair. The apply script counts, per index, the members it
 * put in (KEYS[3]: what ZADD added minus what ZREM removed), so an index smaller or larger than
 * its count lost members to, or got them from, someone else: a DEL of the whole set, a ZREM, a
 * partial restore. Nothing else shows such a loss (the record survives; a list simply omits the
 * evaluation), and keyspace events do not tell a hand's ZREM from the projection's.
 *
 * A partition whose indexes differ from their counts is repaired from its records (which the
 * read guard and the lost-keys watcher keep whole): every record's member put into `all` and its
 * status' index and out of the others, members of a status index whose record says otherwise
 * taken out, then each count set to its index's size. Each page is written with the projection's
 * compare-and-set on the partition's checkpoint, so a step landing meanwhile makes the page be
 * read again rather than undone. Index members without a record are left to the record repair
 * (`onLost`): they are lost records, not stray members.
 */
export interface IndexCounts {
  /** Partitions (with a checkpoint) any of whose indexes differs from its count: one MULTI each. */
  audit(): Promise<number[]>;
  /** Puts the partition's indexes right from its records, then their counts. */
  repair(partition: number): Promise<{ readonly added: number; readonly removed: number }>;
}

/** Records and members read per round trip of a repair. */
const PAGE = 500;
/** Tries of a page (or the recount) whose checkpoint moved under it. */
const ATTEMPTS = 20;

class CheckpointMoved extends Error {
  override name = 'CheckpointMoved';
}

/** The replies of a MULTI, each checked. */
function replies(results: [Error | null, unknown][] | null): unknown[] {
  if (results === null) throw new Error('a MULTI of the index check was aborted');
  return results.map(([err, value]) => {
    if (err !== null) throw err;
    return value;
  });
}

export function createIndexCounts(deps: {
  readonly redis: Redis;
  readonly store: ProjectionStore;
  readonly layout: KeyLayout;
  readonly onLost: (evalIds: readonly string[]) => void;
}): IndexCounts {
  const { redis, store, layout } = deps;
  const indexKeys = (p: number): string[] => [
    layout.indexAll(p),
    ...INDEXED_STATUSES.map((s) => layout.indexStatus(p, s)),
  ];

  /** Writes `ops` if the partition is still at `checkpoint`; CheckpointMoved otherwise. */
  const write = async (p: number, checkpoint: bigint, ops: WriteSet): Promise<void> => {
    const [result] = await store.write([
      { partition: p, expectedCheckpoint: checkpoint, newCheckpoint: checkpoint, ops },
    ]);
    if (result !== true) throw new CheckpointMoved();
  };

  /** Tries `page` until its write lands at an unmoved checkpoint. */
  const untilLanded = async <T>(page: () => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await page();
      } catch (err) {
        if (!(err instanceof CheckpointMoved) || attempt >= ATTEMPTS) throw err;
      }
    }
  };

  /** Every record's member into `all` and its status' index, out of the others. */
  const fromRecords = async (p: number, recordKeys: readonly string[]): Promise<number> => {
    const prefix = layout.record(p, '');
    const ids = recordKeys.map((key) => key.slice(prefix.length));
    const tx = redis.multi().get(layout.checkpoint(p));
    tx.mgetBuffer(...recordKeys);
    const [checkpointText, records] = replies(await tx.exec()) as [string | null, (Buffer | null)[]];
    const checkpoint = parseCheckpoint(checkpointText);
    const wanted = new Map<string, { member: string; status: number }>();
    records.forEach((bytes, i) => {
      if (bytes === null) return;
      const record = decodeRecord(bytes);
      wanted.set(ids[i] as string, { member: listMember(record), status: record.status });
    });
    const members = [...wanted.values()].map((w) => w.member);
    if (members.length === 0) return 0;
    const check = redis.multi();
    for (const key of indexKeys(p)) check.zmscore(key, ...members);
    const scores = replies(await check.exec()) as (string | null)[][];
    const ops = new WriteSet();
    let changed = 0;
    [...wanted.values()].forEach(({ member, status }, i) => {
      indexKeys(p).forEach((key, k) => {
        const present = scores[k]?.[i] !== null;
        const belongs = k === 0 || INDEXED_STATUSES[k - 1] === status;
        if (present === belongs) return;
        changed += 1;
        if (belongs) ops.zadd(key, member);
        else ops.zrem(key, member);
      });
    });
    if (changed > 0) await write(p, checkpoint, ops);
    return changed;
  };

  /** Members of status index `k` whose record says another status (or another member) taken out. */
  const strays = async (p: number, key: string, status: number, members: readonly string[]): Promise<number> => {
    const ids = members.map((m) => m.slice(CREATED_DIGITS + 1));
    const tx = redis.multi().get(layout.checkpoint(p));
    tx.mgetBuffer(...ids.map((id) => layout.record(p, id)));
    const [checkpointText, records] = replies(await tx.exec()) as [string | null, (Buffer | null)[]];
    const checkpoint = parseCheckpoint(checkpointText);
    const ops = new WriteSet();
    const lost: string[] = [];
    let removed = 0;
    records.forEach((bytes, i) => {
      const member = members[i] as string;
      if (bytes === null) {
        lost.push(ids[i] as string);
        return;
      }
      const record = decodeRecord(bytes);
      if (record.status === status && listMember(record) === member) return;
      ops.zrem(key, member);
      removed += 1;
    });
    if (lost.length > 0) deps.onLost(lost);
    if (removed > 0) await write(p, checkpoint, ops);
    return removed;
  };

  return {
    async audit() {
      const damaged: number[] = [];
      await Promise.all(
        partitionNumbers(layout).map(async (p) => {
          const tx = redis.multi().get(layout.checkpoint(p)).hgetall(layout.indexCounts(p));
          for (const key of indexKeys(p)) tx.zcard(key);
          const [checkpoint, counts, ...sizes] = replies(await tx.exec()) as [
            string | null,
            Record<string, string>,
            ...number[],
          ];
          if (checkpoint === null) return; // nothing projected, or a replay under way
          const differs = indexKeys(p).some((key, k) => Number(counts[key] ?? 0) !== sizes[k]);
          if (differs) damaged.push(p);
        }),
      );
      return damaged.sort((a, b) => a - b);
    },
    async repair(p) {
      let added = 0;
      let removed = 0;
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${layout.record(p, '')}*`, 'COUNT', PAGE);
        if (keys.length > 0) added += await untilLanded(() => fromRecords(p, keys));
        cursor = next;
      } while (cursor !== '0');
      for (const [k, status] of INDEXED_STATUSES.entries()) {
        const key = layout.indexStatus(p, status);
        let after = '-';
        for (;;) {
          const members = await redis.zrange(key, after, '+', 'BYLEX', 'LIMIT', 0, PAGE);
          if (members.length === 0) break;
          removed += await untilLanded(() => strays(p, key, INDEXED_STATUSES[k] as number, members));
          after = `(${members[members.length - 1]}`;
        }
      }
      await untilLanded(async () => {
        const checkpoint = parseCheckpoint(await redis.get(layout.checkpoint(p)));
        const ops = new WriteSet();
        for (const key of indexKeys(p)) ops.recount(key);
        await write(p, checkpoint, ops);
      });
      return { added, removed };
    },
  };
}

/**
 * Keeps the indexes whole: audits every partition every `intervalMs` and whenever asked (a list
 * read that saw an index differ from its count, a keyspace event for an index key), and repairs
 * what the audit finds, one run at a time.
 */
export function keepIndexes(deps: {
  readonly counts: IndexCounts;
  readonly intervalMs: number;
  readonly logger: Logger;
}): { start(): void; check(): void; stop(): Promise<void> } {
  const { counts, logger } = deps;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  let failures = 0;

  const run = async (): Promise<void> => {
    do {
      again = false;
      try {
        for (const p of await counts.audit()) {
          const { added, removed } = await counts.repair(p);
          logger.warn('an index differed from its count; repaired from the records', { partition: p, added, removed });
        }
        failures = 0;
      } catch (err) {
        failures += 1;
        if (failures === 1 || failures % 20 === 0)
          logger.warn('checking the indexes failed; retrying', { err, failures });
      }
    } while (again && !stopped);
  };
  const check = (): void => {
    if (stopped) return;
    if (running !== undefined) {
      again = true;
      return;
    }
    running = run().finally(() => {
      running = undefined;
    });
  };
  let timer: NodeJS.Timeout | undefined;
  return {
    start() {
      timer ??= setInterval(check, deps.intervalMs);
      timer.unref();
      check();
    },
    check,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
