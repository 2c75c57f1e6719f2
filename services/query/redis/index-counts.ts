import { createHash } from 'node:crypto';
import { DEFAULT_TENANT } from '../../../shared/domain';
import { scanKeys, type RedisClient } from '../../../shared/redis';
import type { Logger } from '../../../shared/logging';
import type { ProjectionStore } from '../projection/applier';
import { decodeRecord } from '../read-models/evaluation-record';
import {
  CREATED_DIGITS,
  facetMarker,
  indexKeysOfEvaluation,
  listMember,
  possibleIndexKeys,
} from '../read-models/evaluation-list';
import { indexKeysOf, partitionNumbers, type KeyLayout } from '../read-models/keys';
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
  audit(): Promise<{
    /** Every partition with a checkpoint. */
    readonly projected: number[];
    readonly damaged: number[];
    readonly uncounted: number[];
    readonly unmarked: number[];
  }>;
  /** Puts the partition's indexes right from its records, and their counts. */
  repair(partition: number): Promise<{ readonly added: number; readonly removed: number }>;
  /** Sets every count of the partition to its index's size (one atomic script). */
  recount(partition: number): Promise<void>;
  /** Records that the partition's facet indexes are whole, as this layout has them (after a repair filled them in). */
  mark(partition: number): Promise<void>;
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
  readonly redis: RedisClient;
  readonly store: ProjectionStore;
  readonly layout: KeyLayout;
  readonly onLost: (evalIds: readonly string[]) => void;
}): IndexCounts {
  const { redis, store, layout } = deps;

  /**
   * The partition's indexes: `all` first, then each status', then every facet index its counts
   * name (a facet index exists once the projection put a member in it, and counted it).
   */
  const knownIndexKeys = async (p: number): Promise<string[]> =>
    withCountedIndexes(layout, p, Object.keys(await redis.hgetall(layout.indexCounts(p))));

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

  /** Every record's member into its indexes (`all`, its status, that status' facets), out of the others. */
  const fromRecords = async (p: number, recordKeys: readonly string[]): Promise<number> => {
    const records = await redis.mgetBuffer(...recordKeys);
    const wanted: { member: string; keys: string[]; belongs: Set<string>; key: string; digest: string }[] = [];
    records.forEach((bytes, i) => {
      if (bytes === null) return;
      const record = decodeRecord(bytes);
      wanted.push({
        member: listMember(record),
        keys: possibleIndexKeys(layout, p, record),
        belongs: new Set(indexKeysOfEvaluation(layout, p, record)),
        key: recordKeys[i] as string,
        digest: sha1(bytes),
      });
    });
    if (wanted.length === 0) return 0;
    const check = redis.multi();
    for (const { member, keys } of wanted) for (const key of keys) check.zscore(key, member);
    const scores = checkedReplies(await check.exec()) as (string | null)[];
    const ops = new WriteSet();
    const decidedFrom = new Map<string, string>();
    let at = 0;
    for (const { member, keys, belongs, key: recordKey, digest } of wanted) {
      for (const key of keys) {
        const present = scores[at++] !== null;
        if (present === belongs.has(key)) continue;
        decidedFrom.set(recordKey, digest);
        if (present) ops.zrem(key, member);
        else ops.zadd(key, member);
      }
    }
    if (decidedFrom.size > 0) await write(p, ops, decidedFrom);
    return decidedFrom.size;
  };

  /** Members of a status or facet index whose record says it is not in it (or another member), taken out. */
  const strays = async (p: number, key: string, members: readonly string[]): Promise<number> => {
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
      if (listMember(record) === member && indexKeysOfEvaluation(layout, p, record).includes(key)) return;
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
    for await (const keys of scanKeys(redis, `${layout.record(p, '')}*`, PAGE))
      added += await untilLanded(() => fromRecords(p, keys));
    // Every index but the tenants' `all`: a member with its record is always rightly there.
    const listing = (await knownIndexKeys(p)).filter((key) => layout.describeIndex(key)?.status !== undefined);
    for (const key of listing) {
      let after = '-';
      for (;;) {
        const members = await redis.zrange(key, after, '+', 'BYLEX', 'LIMIT', 0, PAGE);
        if (members.length === 0) break;
        removed += await untilLanded(() => strays(p, key, members));
        after = `(${members[members.length - 1]}`;
      }
    }
    return { added, removed };
  };

  const recount = async (p: number): Promise<void> => {
    const ops = new WriteSet();
    for (const key of await knownIndexKeys(p)) ops.recount(key);
    await write(p, ops, new Map());
  };

  return {
    async audit() {
      const projected: number[] = [];
      const damaged: number[] = [];
      const uncounted: number[] = [];
      const unmarked: number[] = [];
      const marker = facetMarker(layout);
      await Promise.all(
        partitionNumbers(layout).map(async (p) => {
          const found = await readCountedIndexes(redis, layout, p);
          if (found.checkpoint === null) return; // nothing projected, or a replay under way
          projected.push(p);
          if (found.facets !== marker) unmarked.push(p);
          if (found.counts.size === 0) {
            if (found.sizes.some((size) => size > 0)) uncounted.push(p);
          } else if (found.keys.some((key, k) => (found.counts.get(key) ?? 0) !== found.sizes[k])) damaged.push(p);
        }),
      );
      const ascending = (a: number, b: number): number => a - b;
      return {
        projected: projected.sort(ascending),
        damaged: damaged.sort(ascending),
        uncounted: uncounted.sort(ascending),
        unmarked: unmarked.sort(ascending),
      };
    },
    async mark(p) {
      const ops = new WriteSet();
      ops.set(layout.facets(p), Buffer.from(facetMarker(layout)));
      await write(p, ops, new Map());
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
 * what the audit finds, one run at a time. A sweep repairs every partition whatever its counts
 * say: after a replay over read models that lost data (a deleted checkpoint), where a member
 * the replay put in an index is counted and yet its evaluation may have left that index
 * without the replay knowing it was there (its record was lost too).
 */
export function keepIndexes(deps: {
  readonly counts: IndexCounts;
  readonly intervalMs: number;
  readonly logger: Logger;
}): { start(): void; check(): void; sweep(): void; stop(): Promise<void> } {
  const { counts, logger } = deps;
  let running: Promise<void> | undefined;
  let again = false;
  let sweepAsked = false;
  let stopped = false;
  let failures = 0;
  let wake = (): void => undefined;

  const run = async (): Promise<void> => {
    do {
      again = false;
      const sweeping = sweepAsked;
      sweepAsked = false;
      try {
        const { projected, damaged, uncounted, unmarked } = await counts.audit();
        for (const p of uncounted) {
          await counts.recount(p);
          logger.info('indexes without counts (written by an older version) counted', { partition: p });
        }
        for (const p of damaged) {
          const { added, removed } = await counts.repair(p);
          logger.warn('an index differed from its count; repaired from the records', { partition: p, added, removed });
        }
        if (sweeping)
          for (const p of projected.filter((q) => !damaged.includes(q))) {
            const { added, removed } = await counts.repair(p);
            if (added + removed > 0)
              logger.warn('indexes swept after a replay over lost data', { partition: p, added, removed });
          }
        // Facet indexes a version without them, or an earlier INDEXED_METADATA_KEYS, left
        // incomplete: the same repair fills them in (and takes out those of keys no longer
        // indexed), then the marker says they are whole.
        for (const p of unmarked.filter((u) => !damaged.includes(u))) {
          const { added, removed } = await counts.repair(p);
          await counts.mark(p);
          logger.info('facet indexes filled in from the records', { partition: p, added, removed });
        }
        failures = 0;
      } catch (err) {
        sweepAsked ||= sweeping;
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
    sweep() {
      sweepAsked = true;
      check();
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      wake();
      await running;
    },
  };
}

/**
 * The fixed indexes of a partition (the default tenant's `all`, then each status'), then every
 * other index among `counted`: another tenant's indexes exist once the projection put a member in
 * them, and counted it.
 */
export function withCountedIndexes(layout: KeyLayout, p: number, counted: Iterable<string>): string[] {
  const keys = indexKeysOf(layout, p, DEFAULT_TENANT);
  const fixed = new Set(keys);
  for (const key of counted) if (!fixed.has(key) && layout.describeIndex(key)?.partition === p) keys.push(key);
  return keys;
}

/**
 * A partition's checkpoint, index counts and the size of every index they name (and of the fixed
 * ones), read consistently: the counts are read first to learn the facet indexes, then all of it
 * in one MULTI, again while that MULTI names a facet index the first read did not.
 */
export async function readCountedIndexes(
  redis: RedisClient,
  layout: KeyLayout,
  p: number,
): Promise<{
  readonly checkpoint: string | null;
  /** The partition's facet marker (read-models/evaluation-list.ts `facetMarker`). */
  readonly facets: string | null;
  readonly counts: ReadonlyMap<string, number>;
  readonly keys: readonly string[];
  readonly sizes: readonly number[];
}> {
  let counted = Object.keys(await redis.hgetall(layout.indexCounts(p)));
  // A facet index first counted between the two reads is asked for again; past a few rounds it is
  // left to the next read (an index is new only once).
  for (let round = 1; ; round += 1) {
    const keys = withCountedIndexes(layout, p, counted);
    const tx = redis.multi().get(layout.checkpoint(p)).get(layout.facets(p)).hgetall(layout.indexCounts(p));
    for (const key of keys) tx.zcard(key);
    const [checkpoint, facets, counts, ...sizes] = checkedReplies(await tx.exec()) as [
      string | null,
      string | null,
      Record<string, string>,
      ...number[],
    ];
    const asked = new Set(keys);
    counted = Object.keys(counts);
    if (round >= 5 || counted.every((key) => asked.has(key) || layout.describeIndex(key)?.partition !== p)) {
      const byKey = new Map(Object.entries(counts).map(([key, n]) => [key, Number(n)]));
      return { checkpoint, facets, counts: byKey, keys, sizes };
    }
  }
}
