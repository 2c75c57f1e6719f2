import { OutOfRangeError } from '../../../shared/errors';
import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { KeyLayout } from './keys';
import type { ChangeMeta, WriteSink } from './write-ops';
import { fromBytes, undecodable } from '../wire/encoded';
import { updateInResponse } from '../wire/readability';
import { tenantOfUpdate } from '../wire/metadata';
import { changeOf, type Change } from '../live/change';

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
  /**
   * Why no client could decode its update, when none could: the change is then a stand-in made
   * of the fields beside it (wire/encoded.ts `unreadable`), which streams pass as a progress
   * marker. The reader reports it; it never stops a read.
   */
  readonly unreadable?: string;
}

export function positionOfEntryId(id: string): bigint {
  const dash = id.indexOf('-');
  return BigInt(dash === -1 ? id : id.slice(0, dash));
}

/** The routing fields beside an entry's update, when all three are there and well-formed. */
function sideFields(
  evalId: string | undefined,
  status: string | undefined,
  revision: string | undefined,
): Pick<Change, 'evalId' | 'status' | 'revision'> | undefined {
  if (evalId === undefined || status === undefined || revision === undefined) return undefined;
  if (!/^\d{1,9}$/.test(status) || !/^\d{1,19}$/.test(revision)) return undefined;
  return { evalId, status: Number(status), revision: BigInt(revision) };
}

/**
 * One stream entry as XRANGE/XREAD return it (fields as a flat name/value list), without
 * decoding its update when the entry carries the change's fields. Never throws: an update no
 * client could decode (or none at all) makes an entry that says so (`unreadable`), at its
 * position, so that a read goes on past it in order.
 */
export function decodeChangeLogEntry(id: Buffer | string, fields: readonly Buffer[]): ChangeLogEntry {
  let value: Buffer | undefined;
  let evalId: string | undefined;
  let status: string | undefined;
  let revision: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = fields[i];
    const field = fields[i + 1] as Buffer;
    // One-byte names: compare the byte, not a string made of it.
    if (name?.length !== 1) continue;
    if (name[0] === 0x75 /* u */) value = field;
    else if (name[0] === 0x65 /* e */) evalId = field.toString();
    else if (name[0] === 0x73 /* s */) status = field.toString();
    else if (name[0] === 0x72 /* r */) revision = field.toString();
  }
  const position = positionOfEntryId(id.toString());
  const side = sideFields(evalId, status, revision);
  const unreadable = value === undefined ? 'the entry holds no update (field u)' : updateInResponse(value);
  if (unreadable !== undefined) {
    const known = side ?? { evalId: '', status: 0, revision: 0n };
    const standIn = EvaluationUpdate.fromPartial({
      position: position.toString(),
      revision: known.revision.toString(),
      evaluation: { evalId: known.evalId, status: known.status },
    });
    const update = undecodable(value ?? new Uint8Array(0), standIn, unreadable);
    return { position, change: { position, ...known, tenant: '', update }, unreadable };
  }
  const update = fromBytes(EvaluationUpdate, value as Buffer);
  // The entry id is the position, whatever the update says: it is what the stream is ordered by.
  if (side === undefined) return { position, change: { ...changeOf(update), position } };
  // The tenant is read from the update's bytes (a scan, no decode), once per entry for every watcher.
  return { position, change: { position, ...side, tenant: tenantOfUpdate(update.bytes) ?? '', update } };
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
   * OutOfRangeError when changes after `after` have been trimmed. An entry no client could
   * decode comes in its place, marked `unreadable` (and reported).
   */
  readAfter(after: bigint, count: number): Promise<{ entries: ChangeLogEntry[]; complete: boolean }>;
  /**
   * The smallest position a client may resume after (0 while nothing was trimmed or archived):
   * never below the event log's horizon, whose changes were archived with their evaluations.
   */
  oldestResumable(): Promise<bigint>;
}
