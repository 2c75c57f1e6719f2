import type { RedisClient } from '../../../shared/redis';
import { UnavailableError } from '../../../shared/errors';
import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { ChangeLogEntry } from '../read-models/change-log';
import { idsByPartition, type KeyLayout } from '../read-models/keys';
import { storesMetadata } from '../read-models/stored-update';
import { fromBytes } from '../wire/encoded';
import { metadataOfEvaluation, metadataOfUpdate, withMetadata } from '../wire/metadata';

/**
 * Puts each change's metadata back into its update (read-models/stored-update.ts: only an
 * evaluation's first update stores it), for the change log's replays and the live tail.
 */
export interface MetadataSource {
  /**
   * `entries` with every update whole, in the same order, as far as `budgetBytes` of whole
   * updates go (at least one entry); `cut` when entries were left out for the budget. Throws
   * UnavailableError when an evaluation's metadata cannot be found (Redis or PostgreSQL down):
   * the caller reads again.
   */
  complete(
    entries: readonly ChangeLogEntry[],
    budgetBytes?: number,
  ): Promise<{ entries: ChangeLogEntry[]; cut: boolean }>;
  /** Forgets what it knows: the log it was learnt from may have been replaced (a rebuild). */
  clear(): void;
}

/**
 * An evaluation's metadata as its state encodes it: a Struct's bytes, or null when the state has
 * none (which a client tells apart from an empty Struct).
 */
export type Metadata = Uint8Array | null;

/** The metadata of evaluations as their submit events hold it (PostgreSQL); absent when unknown. */
export type MetadataFromLog = (evalIds: readonly string[]) => Promise<ReadonlyMap<string, Metadata>>;

/** Bytes a cached entry is counted at beyond its metadata (the key, the map's own cost). */
const ENTRY_OVERHEAD = 128;

/**
 * Metadata never changes after the submit, so it is kept in a cache bounded by bytes (least
 * recently used first out), filled from the submits the tail and replays pass (which store it)
 * and, on a miss, from the records (one MGET per partition) or, for an evaluation whose record
 * is gone (a lost key being repaired), from its submit event in the log.
 */
export function createMetadataSource(deps: {
  readonly redis: RedisClient;
  readonly layout: KeyLayout;
  readonly fromLog: MetadataFromLog;
  readonly maxBytes: number;
}): MetadataSource {
  const { redis, layout } = deps;
  const cache = new Map<string, Metadata>();
  let bytes = 0;

  const remember = (evalId: string, metadata: Metadata): void => {
    const old = cache.get(evalId);
    if (old !== undefined) {
      cache.delete(evalId);
      bytes -= (old?.length ?? 0) + ENTRY_OVERHEAD;
    }
    // A copy: a view would keep the whole reply buffer it points into alive.
    const kept = metadata === null ? null : (Uint8Array.prototype.slice.call(metadata) as Uint8Array);
    cache.set(evalId, kept);
    bytes += (kept?.length ?? 0) + ENTRY_OVERHEAD;
    for (const [oldest, value] of cache) {
      if (bytes <= deps.maxBytes) break;
      cache.delete(oldest);
      bytes -= (value?.length ?? 0) + ENTRY_OVERHEAD;
    }
  };

  const recall = (evalId: string): Metadata | undefined => {
    const value = cache.get(evalId);
    if (value !== undefined) {
      cache.delete(evalId);
      cache.set(evalId, value);
    }
    return value;
  };

  /** Records read per MGET on a miss: each may hold up to a MiB of metadata. */
  const RECORDS_PER_READ = 64;

  const fetch = async (evalIds: readonly string[]): Promise<Map<string, Metadata>> => {
    const found = new Map<string, Metadata>();
    try {
      for (const [p, ids] of idsByPartition(layout, evalIds)) {
        const records = await redis.mgetBuffer(...ids.map((id) => layout.record(p, id)));
        records.forEach((record, i) => {
          const metadata = record === null ? undefined : metadataOfEvaluation(record);
          // A record that does not parse leaves the metadata unknown: the log has it.
          if (metadata !== undefined) found.set(ids[i] as string, metadata);
        });
      }
    } catch (err) {
      throw new UnavailableError("Redis is unavailable (reading evaluations' metadata)", { cause: err });
    }
    const missing = evalIds.filter((id) => !found.has(id));
    if (missing.length > 0) {
      const logged = await deps.fromLog(missing);
      for (const id of missing) {
        const metadata = logged.get(id);
        if (metadata === undefined)
          throw new UnavailableError(`evaluation ${id} has changes in Redis but no submit in the event log`);
        found.set(id, metadata);
      }
    }
    for (const [id, metadata] of found) remember(id, metadata);
    return found;
  };

  /** Whether the stored update lacks the metadata its evaluation has (caching what a submit carries). */
  const lacksMetadata = (entry: ChangeLogEntry): boolean => {
    const { change } = entry;
    if (entry.unreadable !== undefined) return false;
    const stored = metadataOfUpdate(change.update.bytes);
    if (storesMetadata(change.revision)) {
      remember(change.evalId, stored ?? null);
      return false;
    }
    return stored === undefined; // else written whole, before updates were stored lean
  };

  return {
    async complete(entries, budgetBytes = Infinity) {
      const out: ChangeLogEntry[] = [];
      let bytes = 0;
      let at = 0;
      while (at < entries.length) {
        // The next run of entries whose unknown evaluations make one read of records.
        const known = new Map<string, Metadata>();
        const unknown = new Set<string>();
        let end = at;
        const lacking: boolean[] = [];
        for (; end < entries.length; end += 1) {
          const entry = entries[end] as ChangeLogEntry;
          const lacks = lacksMetadata(entry);
          lacking.push(lacks);
          if (!lacks || known.has(entry.change.evalId) || unknown.has(entry.change.evalId)) continue;
          const cached = recall(entry.change.evalId);
          if (cached !== undefined) known.set(entry.change.evalId, cached);
          else if (unknown.size === RECORDS_PER_READ) {
            lacking.pop();
            break;
          } else unknown.add(entry.change.evalId);
        }
        if (unknown.size > 0) for (const [id, metadata] of await fetch([...unknown])) known.set(id, metadata);
        for (let i = at; i < end; i += 1) {
          let entry = entries[i] as ChangeLogEntry;
          const metadata = lacking[i - at] === true ? (known.get(entry.change.evalId) ?? null) : null;
          if (metadata !== null) {
            const { change } = entry;
            const update = fromBytes(EvaluationUpdate, withMetadata(change.update.bytes, metadata));
            entry = { ...entry, change: { ...change, update } };
          }
          const size = entry.change.update.bytes.length;
          if (out.length > 0 && bytes + size > budgetBytes) return { entries: out, cut: true };
          out.push(entry);
          bytes += size;
        }
        at = end;
      }
      return { entries: out, cut: false };
    },
    clear() {
      cache.clear();
      bytes = 0;
    },
  };
}
