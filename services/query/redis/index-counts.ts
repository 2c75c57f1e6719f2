import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../../../shared/logging';
import type { ProjectionStore } from '../projection/applier';
import { decodeRecord } from '../read-models/evaluation-record';
import { CREATED_DIGITS, listMember } from '../read-models/evaluation-list';
import { INDEXED_STATUSES, indexKeysOf, partitionNumbers, type KeyLayout } from '../read-models/keys';
import { WriteSet } from '../read-models/write-ops';
import { checkedReplies } from './errors';

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
 * taken out, then each count set to its index's size, then the same pass again (a member
 * deleted between the first pass and the recount would otherwise be counted as never there; the
 * second pass puts it back, and its ZADD counts it). Each page's fixes are written only if the
 * records they were decided from are unchanged (their SHA-1s, checked by the script before it
 * writes), so a step that moved one of those evaluations meanwhile makes the page be read again
 * rather than undone, and the steady steps on other evaluations do not hold it up. Index members
 * without a record are left to the record repair (`onLost`): they are lost records, not strays.
 *
 * A partition without any counts (written by a version without them) is only counted.
 */
export interface IndexCounts {
  /**
   * Partitions (with a checkpoint) any of whose indexes differs from its count, and those with
   * no counts at all: one MULTI each.
   */
  audit(): Promise<{ readonly damaged: number[]; readonly uncounted: number[] }>;
  /** Puts the partition's indexes right from its records, and their counts. */
  repair(partition: number): Promise<{ readonly added: number; readonly removed: number }>;
  /** Sets every count of the partition to its index's size (one atomic script). */
  recount(partition: number): Promise<void>;
}

/** Records and members read per round trip of a repair. */
const PAGE = 500;
/** Tries of a page whose records changed under it. */
const ATTEMPTS = 20;

class RecordsChanged extends Error {
  override name = 'RecordsChanged';
}

const sha1 = (bytes: Uint8Array): string => createHash('sha1').update(bytes).digest('hex');

export function createIndexCounts(deps: {
  readonly redis: Redis;
  readonly store: ProjectionStore;
  readonly layout: KeyLayout;
  readonly onLost: (evalIds: readonly string[]) => void;
}): IndexCounts {
  const { redis, store, layout } = deps;
  const indexKeys = (p: number): string[] => indexKeysOf(layout, p);

  /** Writes `ops` if the records `decidedFrom` names are unchanged; RecordsChanged otherwise. */
  const write = async (p: number, ops: WriteSet, decidedFrom: ReadonlyMap<string, string>): Promise<void> => {
    const [result] = await store.write([
      { partition: p, expectedCheckpoint: 0n, newCheckpoint: 0n, ops, ifUnchanged: decidedFrom },
    ]);
    if (result !== true) throw new RecordsChanged();
  };

  /** Tries `page` until its write lands on the records it was decided from. */
  const untilLanded = async <T>(page: () => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await page();
      } catch (err) {
        if (!(err instanceof RecordsChanged) || attempt >= ATTEMPTS) throw err;
      }
    }
  };

  /** Every record's member into `all` and its status' index, out of the others. */
  const fromRecords = async (p: number, recordKeys: readonly string[]): Promise<number> => {
    const records = await redis.mgetBuffer(...recordKeys);
    const wanted: { member: string; status: number; key: string; digest: string }[] = [];
    records.forEach((bytes, i) => {
      if (bytes === null) return;
      const record = decodeRecord(bytes);
      wanted.push({
        member: listMember(record),
        status: record.status,
        key: recordKeys[i] as string,
        digest: sha1(bytes),
      });
    });
    if (wanted.length === 0) return 0;
    const keys = indexKeys(p);
    const check = redis.multi();
    for (const key of keys) check.zmscore(key, ...wanted.map((w) => w.member));
    const scores = checkedReplies(await check.exec()) as (string | null)[][];
    const ops = new WriteSet();
    const decidedFrom = new Map<string, string>();
    wanted.forEach(({ member, status, key: recordKey, digest }, i) => {
      keys.forEach((key, k) => {
        const present = scores[k]?.[i] !== null;
        const belongs = k === 0 || INDEXED_STATUSES[k - 1] === status;
        if (present === belongs) return;
        decidedFrom.set(recordKey, digest);
        if (belongs) ops.zadd(key, member);
        else ops.zrem(key, member);
      });
    });
    if (decidedFrom.size > 0) await write(p, ops, decidedFrom);
    return decidedFrom.size;
  };

  /** Members of a status index whose record says another status (or another member), taken out. */
  const strays = async (p: number, key: string, status: number, members: readonly string[]): Promise<number> => {
    const ids = members.map((m) => m.slice(CREATED_DIGITS + 1));
    const recordKeys = ids.map((id) => layout.record(p, id));
    const records = await redis.mgetBuffer(...recordKeys);
    const ops = new WriteSet();
    const decidedFrom = new Map<string, string>();
    const lost: string[] = [];
    records.forEach((bytes, i) => {
      const member = members[i] as string;
      if (bytes === null) {
        lost.push(ids[i] as string);
        return;
      }
      const record = decodeRecord(bytes);
      if (record.status === status && listMember(record) === member) return;
      ops.zrem(key, member);
      decidedFrom.set(recordKeys[i] as string, sha1(bytes));
    });
    if (lost.length > 0) deps.onLost(lost);
    if (decidedFrom.size > 0) await write(p, ops, decidedFrom);
    return decidedFrom.size;
  };

  /** One pass over the partition: its records, then each status index's members. */
  const pass = async (p: number): Promise<{ added: number; removed: number }> => {
    let added = 0;
    let removed = 0;
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${layout.record(p, '')}*`, 'COUNT', PAGE);
      if (keys.length > 0) added += await untilLanded(() => fromRecords(p, keys));
      cursor = next;
    } while (cursor !== '0');
    for (const status of INDEXED_STATUSES) {
      const key = layout.indexStatus(p, status);
      let after = '-';
      for (;;) {
        const members = await redis.zrange(key, after, '+', 'BYLEX', 'LIMIT', 0, PAGE);
        if (members.length === 0) break;
        removed += await untilLanded(() => strays(p, key, status, members));
        after = `(${members[members.length - 1]}`;
      }
    }
    return { added, removed };
  };

  const recount = async (p: number): Promise<void> => {
    const ops = new WriteSet();
    for (const key of indexKeys(p)) ops.recount(key);
    await write(p, ops, new Map());
  };

  return {
    async audit() {
      const damaged: number[] = [];
      const uncounted: number[] = [];
      await Promise.all(
        partitionNumbers(layout).map(async (p) => {
          const tx = redis.multi().get(layout.checkpoint(p)).hgetall(layout.indexCounts(p));
          for (const key of indexKeys(p)) tx.zcard(key);
          const [checkpoint, counts, ...sizes] = checkedReplies(await tx.exec()) as [
            string | null,
            Record<string, string>,
            ...number[],
          ];
          if (checkpoint === null) return; // nothing projected, or a replay under way
          if (Object.keys(counts).length === 0) {
            if (sizes.some((size) => size > 0)) uncounted.push(p);
          } else if (indexKeys(p).some((key, k) => Number(counts[key] ?? 0) !== sizes[k])) damaged.push(p);
        }),
      );
      const ascending = (a: number, b: number): number => a - b;
      return { damaged: damaged.sort(ascending), uncounted: uncounted.sort(ascending) };
    },
    async repair(p) {
      const first = await pass(p);
      await recount(p);
      const second = await pass(p);
      return { added: first.added + second.added, removed: first.removed + second.removed };
    },
    recount,
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
  let wake = (): void => undefined;

  const run = async (): Promise<void> => {
    do {
      again = false;
      try {
        const { damaged, uncounted } = await counts.audit();
        for (const p of uncounted) {
          await counts.recount(p);
          logger.info('indexes without counts (written by an older version) counted', { partition: p });
        }
        for (const p of damaged) {
          const { added, removed } = await counts.repair(p);
          logger.warn('an index differed from its count; repaired from the records', { partition: p, added, removed });
        }
        failures = 0;
      } catch (err) {
        failures += 1;
        if (failures === 1 || failures % 20 === 0)
          logger.warn('checking the indexes failed; retrying', { err, failures });
        // Not at once: reads that keep finding the damage keep asking.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(5000, 100 * 2 ** Math.min(failures, 6)));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
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
      wake();
      await running;
    },
  };
}
