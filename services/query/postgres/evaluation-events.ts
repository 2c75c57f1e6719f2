import { queryAs } from '../../../shared/postgres';
import type { Pool } from 'pg';
import { EVENT_TYPE_TO_PROTO, type EvaluationEventType } from '../../../shared/domain';
import { EventType } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EventLogEntry } from '../../../shared/generated/crucible/storage/v1/query_service';
import type { EvaluationEvents, EventPage } from '../handlers/get-evaluation-events';
import type { ArchivedEvent } from '../../../shared/archive';
import type { ArchiveReader } from '../archive/archive-reader';
import { archiveLocationOf } from '../archive/retired-evaluations';
import { readOrUnavailable } from './event-log';

/**
 * What one page may hold of event data (JSON text, as `data_bytes` counts it) beside its
 * page_size; the first event is always served. Clients receive at most 4 MiB per message by
 * default and a Struct is larger on the wire than its JSON (each value is wrapped, each key is a
 * map entry: up to several times for small, nested values), so a page of 1000 events with large
 * data (a submit's metadata, a metrics event's summaries) would not reach them whole.
 */
export const EVENT_PAGE_BYTES = 1024 * 1024;

/**
 * One round trip for both answers: no row when the evaluation is unknown (the LEFT JOIN from
 * `evaluations`), one row of NULLs when it has no event after $2, else its events after $2 in
 * revision order, at most $3 (the caller asks for one more than it serves, to know whether a
 * next page exists) and those within the byte budget $4, plus the first beyond it (`fits`
 * false, its data left in the table: it only says there is more). An event is within the
 * budget when the data before it is below it (`bytes_before`, the running sum without it, as
 * READ_AFTER_SQL in event-log.ts); the first beyond is the one whose predecessor still was
 * (`bytes_before_previous`). The window runs over the (eval_id, revision) index in order, so
 * the LIMIT stops the scan.
 */
export const EVENTS_PAGE_SQL = `SELECT e.position::text AS position, e.revision::text AS revision, e.event_type,
       CASE WHEN e.bytes_before < $4 THEN e.data END AS data, e.recorded_at, e.reporter,
       e.bytes_before < $4 AS fits, arch.archive_key, arch.sha256
  FROM evaluations AS known
  LEFT JOIN archived_evaluations AS arch ON arch.eval_id = known.eval_id
  LEFT JOIN LATERAL (
    SELECT position, revision, event_type, data, recorded_at, reporter,
           sum(data_bytes) OVER running - data_bytes AS bytes_before,
           sum(data_bytes) OVER running - data_bytes - lag(data_bytes, 1, 0) OVER running AS bytes_before_previous
      FROM evaluation_events
     WHERE eval_id = known.eval_id AND revision > $2
    WINDOW running AS (ORDER BY revision ROWS UNBOUNDED PRECEDING)
     ORDER BY revision
     LIMIT $3
  ) AS e ON e.bytes_before_previous < $4
 WHERE known.eval_id = $1
 ORDER BY e.revision`;

/** A row of EVENTS_PAGE_SQL: all NULL on the row of an evaluation without events after the cursor. */
interface EventPageRow {
  readonly position: string | null;
  readonly revision: string | null;
  readonly event_type: string | null;
  readonly data: unknown;
  readonly recorded_at: Date | null;
  /** NULL for events written before reporters were recorded. */
  readonly reporter: string | null;
  readonly fits: boolean | null;
  /** Set on every row of an archived evaluation (the trail is then the archive's). */
  readonly archive_key?: string | null;
  readonly sha256?: string | null;
}

/**
 * The EventType of a stored `event_type`, UNSPECIFIED for one this version does not know (a
 * newer writer's): the trail is still served, the event's data saying what it was.
 */
export function eventTypeOf(text: string): EventType {
  return Object.hasOwn(EVENT_TYPE_TO_PROTO, text)
    ? EVENT_TYPE_TO_PROTO[text as EvaluationEventType]
    : EventType.EVENT_TYPE_UNSPECIFIED;
}

/** An event's data as a Struct (ts-proto takes a plain object); every event's data is a JSON object. */
function structOf(data: unknown): Record<string, unknown> | undefined {
  return typeof data === 'object' && data !== null && !Array.isArray(data)
    ? (data as Record<string, unknown>)
    : undefined;
}

/** A row that holds an event (on the row of NULLs every column is NULL). */
type EventRow = {
  readonly [K in Exclude<keyof EventPageRow, 'data' | 'reporter' | ArchiveColumn>]: NonNullable<EventPageRow[K]>;
} & Pick<EventPageRow, 'data' | 'reporter' | ArchiveColumn>;

type ArchiveColumn = 'archive_key' | 'sha256';

function holdsEvent(row: EventPageRow): row is EventRow {
  return row.position !== null && row.revision !== null && row.event_type !== null;
}

function entryOf(row: EventRow): EventLogEntry {
  return {
    eventType: eventTypeOf(row.event_type),
    revision: row.revision,
    position: row.position,
    recordedAt: row.recorded_at,
    data: structOf(row.data),
    reporter: row.reporter ?? '',
  };
}

/**
 * The page EVENTS_PAGE_SQL's rows make: at most `pageSize` events, those within the byte budget,
 * and whether more follow (a row it leaves out); undefined for no row (an unknown evaluation).
 */
export function pageOf(rows: readonly EventPageRow[], pageSize: number): EventPage | undefined {
  if (rows.length === 0) return undefined;
  const stored = rows.filter(holdsEvent);
  const events = stored.filter((row, i) => i < pageSize && row.fits).map(entryOf);
  return { events, more: stored.length > events.length };
}

/**
 * A page of an archived evaluation's trail, from its archive: the same events in the same
 * order as the log gave, by a budget measured as close as JavaScript can (the length of the
 * data's JSON text, where `data_bytes` is PostgreSQL's jsonb text): pages may break a little
 * differently, and every page token stays valid (it holds a revision).
 */
export function archivedPageOf(
  events: readonly ArchivedEvent[],
  afterRevision: bigint,
  pageSize: number,
  maxPageBytes: number,
): EventPage {
  const after = events.filter((e) => BigInt(e.revision) > afterRevision);
  const page: EventLogEntry[] = [];
  let bytes = 0;
  for (const event of after) {
    if (page.length >= pageSize || (page.length > 0 && bytes >= maxPageBytes)) break;
    bytes += JSON.stringify(event.event.data).length;
    page.push({
      eventType: eventTypeOf(event.event.type),
      revision: event.revision,
      position: event.position,
      recordedAt: new Date(event.recordedAt),
      data: structOf(event.event.data),
      reporter: event.reporter ?? '',
    });
  }
  return { events: page, more: after.length > page.length };
}

/** The audit trail from the event log (or the archive), through the query side's read-only connection. */
export function createPostgresEvaluationEvents(
  pool: Pool,
  archives: ArchiveReader,
  options: { maxPageBytes?: number } = {},
): EvaluationEvents {
  const maxPageBytes = options.maxPageBytes ?? EVENT_PAGE_BYTES;
  return {
    page: (tenant, evalId, afterRevision, pageSize) =>
      readOrUnavailable("reading an evaluation's events", async () => {
        const { rows } = await queryAs<EventPageRow>(pool, tenant, {
          text: EVENTS_PAGE_SQL,
          values: [evalId, afterRevision.toString(), pageSize + 1, maxPageBytes],
        });
        const archive = rows[0] === undefined ? undefined : archiveLocationOf(rows[0]);
        if (archive !== undefined) {
          const { events } = await archives.read(archive.key, archive.sha256);
          return archivedPageOf(events, afterRevision, pageSize, maxPageBytes);
        }
        return pageOf(rows, pageSize);
      }),
  };
}
