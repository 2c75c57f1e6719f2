import type { Redis } from 'ioredis';
import { OutOfRangeError } from '../../../shared/errors';
import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { partitionNumbers, type KeyLayout } from './keys';
import type { ChangeMeta, WriteSink } from './write-ops';
import { fromBytes } from '../wire/encoded';
import { changeOf, type Change } from '../live/change';
import { createBoundedRangeReader } from '../redis/bounded-range';

/**
 * Read model: the replayable change log, one Redis Stream per partition. Entry ids are
 * `<position>-0`, so "every change after position N" is `XRANGE key (N-0 +` with no lookup,
 * and the entry carries the encoded EvaluationUpdate (field `u`) and, beside it, what the live
 * path routes and filters by: eval id `e`, status `s`, revision `r` (entries written before
 * those fields existed are decoded for them). Each stream is trimmed to
 * `streams.changeLogRetention` entries (MAXLEN ~). WatchEvaluations replays from it, and every
 * replica's live tail follows it with XREAD BLOCK: it is written in the same atomic step as the
 * records, so it is ordered and gap-free.
 *
 * How an event changes it: one entry is appended.
 */
export function changeLogWrites(
  layout: KeyLayout,
  partition: number,
  position: string,
  update: Buffer,
  meta: ChangeMeta,
  out: WriteSink,
): void {
  out.xadd(layout.changeLog(partition), position, update, meta);
}

export interface ChangeLogEntry {
  readonly position: bigint;
  readonly change: Change;
}

export function positionOfEntryId(id: string): bigint {
  const dash = id.indexOf('-');
  return BigInt(dash === -1 ? id : id.slice(0, dash));
}

/**
 * One stream entry as XRANGE/XREAD return it (fields as a flat name/value list), without
 * decoding its update when the entry carries the change's fields.
 */
export function decodeChangeLogEntry(id: Buffer | string, fields: readonly Buffer[]): ChangeLogEntry {
  let value: Buffer | undefined;
  let evalId: string | undefined;
  let status: number | undefined;
  let revision: bigint | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = fields[i];
    const field = fields[i + 1] as Buffer;
    // One-byte names: compare the byte, not a string made of it.
    if (name?.length !== 1) continue;
    if (name[0] === 0x75 /* u */) value = field;
    else if (name[0] === 0x65 /* e */) evalId = field.toString();
    else if (name[0] === 0x73 /* s */) status = Number(field.toString());
    else if (name[0] === 0x72 /* r */) revision = BigInt(field.toString());
  }
  if (value === undefined) throw new Error(`change log entry ${id.toString()} has no update`);
  const position = positionOfEntryId(id.toString());
  const update = fromBytes(EvaluationUpdate, value);
  if (evalId === undefined || status === undefined || revision === undefined) {
    return { position, change: changeOf(update) };
  }
  return { position, change: { position, revision, evalId, status, update } };
}

/**
 * The longest run of consecutive positions after `after` in `entries` (sorted by position,
 * possibly with duplicates or positions at or below `after`). `gap` says whether entries
 * beyond the run were left out because a position is missing.
 */
export function contiguousRun(
  entries: readonly ChangeLogEntry[],
  after: bigint,
): { run: ChangeLogEntry[]; gap: boolean } {
  const run: ChangeLogEntry[] = [];
  let next = after + 1n;
  for (const entry of entries) {
    if (entry.position < next) continue;
    if (entry.position !== next) return { run, gap: true };
    run.push(entry);
    next += 1n;
  }
  return { run, gap: false };
}

export function outOfRange(oldest: bigint): OutOfRangeError {
  return new OutOfRangeError(
    `oldest resumable position is ${oldest}; re-read state with ListEvaluations and resume from ${oldest}`,
  );
}

/**
 * What one replay read of the change log may hold (encoded updates), beside its count: a
 * resuming firehose client reads its backlog in steps of this size, however large the updates.
 */
export const CHANGE_LOG_READ_BYTES = 4 * 1024 * 1024;

export interface ChangeLog {
  /**
   * Consecutive changes after `after`, in position order, at most about `count` and about
   * CHANGE_LOG_READ_BYTES. `complete` is true when nothing more is stored right now. Throws
   * OutOfRangeError when changes after `after` have been trimmed.
   */
  readAfter(after: bigint, count: number): Promise<{ entries: ChangeLogEntry[]; complete: boolean }>;
  /** The smallest position a client may resume after (0 while nothing was trimmed). */
  oldestResumable(): Promise<bigint>;
}

function xinfoField(reply: unknown, name: string): unknown {
  if (!Array.isArray(reply)) return undefined;
  for (let i = 0; i + 1 < reply.length; i += 2) {
    if (String(reply[i]) === name) return reply[i + 1];
  }
  return undefined;
}

export function createChangeLog(redis: Redis, layout: KeyLayout): ChangeLog {
  const partitions = partitionNumbers(layout);
  const boundedRange = createBoundedRangeReader(redis);
  // Each partition's share; never so small that an update of a typical size does not fit.
  const partitionBytes = Math.max(64 * 1024, Math.floor(CHANGE_LOG_READ_BYTES / partitions.length));

  const oldestResumable = async (): Promise<bigint> => {
    const bounds = await Promise.all(
      partitions.map(async (p) => {
        let info: unknown;
        try {
          info = await redis.xinfo('STREAM', layout.changeLog(p));
        } catch (err) {
          if (err instanceof Error && /no such key/i.test(err.message)) return 0n;
          throw err;
        }
        const length = Number(xinfoField(info, 'length') ?? 0);
        const added = Number(xinfoField(info, 'entries-added') ?? 0);
        if (added <= length) return 0n; // nothing trimmed: everything since position 0 is here
        const first = xinfoField(info, 'first-entry');
        const firstId = Array.isArray(first) && typeof first[0] === 'string' ? first[0] : undefined;
        // Positions of this partition below its first entry are gone: a client can resume
        // only after (first - 1). An emptied stream (never with MAXLEN ~) resumes after its end.
        if (firstId !== undefined) return positionOfEntryId(firstId) - 1n;
        const lastId = xinfoField(info, 'last-generated-id');
        return positionOfEntryId(typeof lastId === 'string' ? lastId : '0-0');
      }),
    );
    return bounds.reduce((max, b) => (b > max ? b : max), 0n);
  };

  return {
    oldestResumable,
    async readAfter(after, count) {
      const pages = await Promise.all(
        partitions.map((p) => boundedRange(layout.changeLog(p), `(${after}-0`, count, partitionBytes)),
      );
      // A full page may stop before another partition's page does: beyond the lowest last
      // position of the full pages, this read knows nothing, so it looks no further.
      let horizon: bigint | undefined;
      for (const page of pages) {
        const last = page.entries[page.entries.length - 1];
        if (!page.full || last === undefined) continue;
        const position = positionOfEntryId(last[0].toString());
        if (horizon === undefined || position < horizon) horizon = position;
      }
      const entries = pages
        .flatMap((page) => page.entries)
        .map(([id, fields]) => decodeChangeLogEntry(id, fields))
        .filter((e) => horizon === undefined || e.position <= horizon)
        .sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : 0));
      const { run, gap } = contiguousRun(entries, after);
      const firstMissing = after + BigInt(run.length) + 1n;
      // A missing position with later ones stored: either it was trimmed (the client is too far
      // behind), or another partition's share of a batch is still being written. Only the
      // first is an error; in the second case the rest arrives live.
      if (gap) {
        const oldest = await oldestResumable();
        if (firstMissing - 1n < oldest) throw outOfRange(oldest);
        return { entries: run, complete: true };
      }
      return { entries: run, complete: horizon === undefined };
    },
  };
}
