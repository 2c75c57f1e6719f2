import type { RedisClient } from '../../../shared/redis';
import {
  CHANGE_LOG_READ_BYTES,
  contiguousRun,
  decodeChangeLogEntry,
  outOfRange,
  positionOfEntryId,
  type ChangeLog,
} from '../read-models/change-log';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';
import { createBoundedRangeReader, partitionShare } from './bounded-range';
import { mappingOutages } from './errors';
import { isChangeLogHole } from './change-log-holes';
import type { UndecodableEntries } from './undecodable-entries';
import type { MetadataSource } from './metadata-source';

function xinfoField(reply: unknown, name: string): unknown {
  if (!Array.isArray(reply)) return undefined;
  for (let i = 0; i + 1 < reply.length; i += 2) {
    if (String(reply[i]) === name) return reply[i + 1];
  }
  return undefined;
}

/**
 * The change log read from Redis. An entry no client could decode is reported to `undecodable`
 * and passed on as such (read-models/change-log.ts), in its place: the read goes on past it.
 * Updates stored without their metadata get it back from `metadata`.
 */
export function createChangeLog(
  redis: RedisClient,
  layout: KeyLayout,
  undecodable: UndecodableEntries,
  metadata: MetadataSource,
  /** The event log's horizon (retention: projection/event-log.ts); 0 when none is given. */
  horizon: () => Promise<bigint> = () => Promise.resolve(0n),
): ChangeLog {
  const partitions = partitionNumbers(layout);
  const boundedRange = createBoundedRangeReader(redis);
  const partitionBytes = partitionShare(CHANGE_LOG_READ_BYTES, partitions.length);

  const oldestResumable = async (): Promise<bigint> => {
    const bounds = await Promise.all([
      // Read models built after retention start at the horizon: what was below it is in no
      // stream, untrimmed as they look. Those built before may still hold it: gone all the same.
      horizon(),
      ...partitions.map(async (p) => {
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
    ]);
    return bounds.reduce((max, b) => (b > max ? b : max), 0n);
  };

  return mappingOutages<ChangeLog>('reading the change log', {
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
        .flatMap((page, p) =>
          page.entries.map(([id, fields]) => {
            const entry = decodeChangeLogEntry(id, fields);
            if (entry.unreadable !== undefined) {
              const { position, unreadable: reason } = entry;
              undecodable.report({ key: layout.changeLog(p), position, reason });
            }
            return entry;
          }),
        )
        .filter((e) => horizon === undefined || e.position <= horizon)
        .sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : 0));
      const { run, gap } = contiguousRun(entries, after);
      const firstMissing = after + BigInt(run.length) + 1n;
      // A missing position with later ones stored: it was trimmed (the client is too far
      // behind), or deleted (a hole: no stream has it although every checkpoint is past it),
      // or another partition's share of a batch is still being written. The first two are
      // OUT_OF_RANGE, naming where a client can resume (after the hole: what came before it is
      // served first, so a client resuming from there misses only the hole); in the third case
      // the rest arrives live.
      if (gap) {
        const oldest = await oldestResumable();
        if (firstMissing - 1n < oldest) throw outOfRange(oldest);
        if (run.length === 0 && (await isChangeLogHole(redis, layout, firstMissing))) throw outOfRange(firstMissing);
        const whole = await metadata.complete(run, CHANGE_LOG_READ_BYTES);
        return { entries: whole.entries, complete: !whole.cut };
      }
      // The stored entries are small (no metadata but a submit's): the byte budget is applied
      // again to them whole.
      const whole = await metadata.complete(run, CHANGE_LOG_READ_BYTES);
      return { entries: whole.entries, complete: horizon === undefined && !whole.cut };
    },
  });
}
