import { types, type Pool, type QueryArrayConfig, type QueryConfig, type QueryResult, type QueryResultRow } from 'pg';
import { ALL_TENANTS, type EvaluationEvent, type RecordedEvent } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import { isPostgresUnavailable, queryAs, type EvaluationEventRow } from '../../../shared/postgres';
import type { EvaluationSource } from '../projection/consistency-check';
import type { EventLog } from '../projection/event-log';
import type { Metadata, MetadataFromLog } from '../redis/metadata-source';
import { encodeStruct } from '../read-models/update-encoding';

/** The columns of COLUMNS, as pg returns them. */
type EventRow = Pick<EvaluationEventRow, 'position' | 'eval_id' | 'revision' | 'event_type' | 'data' | 'recorded_at'>;

const COLUMNS = `position::text AS position, eval_id, revision::text AS revision, event_type, data, recorded_at`;

/** A row of READ_AFTER_SQL read with `rowMode: 'array'` and TIMESTAMP_AS_TEXT: COLUMNS in order, then data_bytes. */
type EventRowArray = [string, string, string, EvaluationEvent['type'], EvaluationEvent['data'], string, number];

const parseTimestamptz = types.getTypeParser(types.builtins.TIMESTAMPTZ) as (text: string) => Date;

const asText = (text: string): string => text;

/** The readAfter query's types: pg's, except `recorded_at` stays text (see isoTimestamp). */
const TIMESTAMP_AS_TEXT = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary'): unknown =>
    oid === (types.builtins.TIMESTAMPTZ as number)
      ? asText
      : types.getTypeParser(oid, format)) as typeof types.getTypeParser,
};

/** What PostgreSQL prints for a timestamptz in a UTC session. */
const UTC_TIMESTAMP = /^[1-9]\d{3}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?\+00$/;

/**
 * `parseTimestamptz(text).toISOString()` — what pg's parser (postgres-date) and toRecordedEvent
 * make of a timestamptz — without the parser's regexes and a Date, for the form a UTC session
 * prints: the same fields, and the milliseconds computed as postgres-date does (1000 × the
 * fraction, truncated by Date.UTC). Any other form goes through the parser.
 */
export function isoTimestamp(text: string): string {
  if (!UTC_TIMESTAMP.test(text)) return parseTimestamptz(text).toISOString();
  const fraction = text.slice(19, -3);
  const ms = fraction === '' ? 0 : Math.trunc(1000 * parseFloat(fraction));
  return `${text.slice(0, 10)}T${text.slice(11, 19)}.${String(ms).padStart(3, '0')}Z`;
}

function fromRowArray([position, evalId, revision, type, data, recordedAt]: EventRowArray): RecordedEvent {
  return { position, evalId, revision, recordedAt: isoTimestamp(recordedAt), event: { type, data } as EvaluationEvent };
}

function toRecordedEvent(row: EventRow): RecordedEvent {
  return {
    position: row.position,
    evalId: row.eval_id,
    revision: row.revision,
    recordedAt: row.recorded_at.toISOString(),
    event: { type: row.event_type, data: row.data } as EvaluationEvent,
  };
}

/** Runs a read; a connection problem becomes UnavailableError (callers retry). */
export async function readOrUnavailable<T>(what: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (isPostgresUnavailable(err)) throw new UnavailableError(`PostgreSQL is unavailable (${what})`, { cause: err });
    throw err;
  }
}

/**
 * What one catch-up or rebuild read may hold of event data (JSON text, as `data_bytes` counts
 * it), beside the count the caller asks for: a batch of large events (metadata near its limit)
 * read by count alone held hundreds of MiB at once in the query service, and several times
 * that on its way into Redis.
 */
export const EVENT_BATCH_BYTES = 4 * 1024 * 1024;

/**
 * Events after $1 in position order, at most $2 of them, stopping once $3 bytes of data were
 * taken: an event is taken when the bytes of the ones before it are below the budget, so the
 * first always is and a batch exceeds the budget by less than one event. (The running sum
 * costs the read about a tenth of its rate on small events: docs/benchmarks.md.)
 */
export const READ_AFTER_SQL = `SELECT ${COLUMNS}, data_bytes FROM (
    SELECT *, sum(data_bytes) OVER (ORDER BY position ROWS UNBOUNDED PRECEDING) - data_bytes AS bytes_before
    FROM evaluation_events WHERE position > $1 ORDER BY position LIMIT $2
  ) AS batch WHERE bytes_before < $3 ORDER BY batch.position`;

/**
 * The event log in PostgreSQL, read through the query side's read-only connection.
 * `position > $1 ORDER BY position` is gap-safe because positions are taken under the
 * `event_log_head` row lock and so become visible in commit order (docs/event-log.md).
 */
export function createPostgresEventLog(pool: Pool, options: { maxBatchBytes?: number } = {}): EventLog {
  const maxBatchBytes = options.maxBatchBytes ?? EVENT_BATCH_BYTES;
  return {
    // The hot read (catch-up, rebuild: thousands of rows a call): rows as arrays, an object
    // per row costs more than the query.
    readAfter: (after, limit) =>
      readOrUnavailable('reading the event log', async () => {
        const statement: QueryArrayConfig = {
          text: READ_AFTER_SQL,
          values: [after.toString(), limit, maxBatchBytes],
          rowMode: 'array',
          types: TIMESTAMP_AS_TEXT,
        };
        const result = await everyTenant<EventRowArray>(pool, statement);
        let bytes = 0;
        const events = result.rows.map((row) => {
          bytes += row[6];
          return fromRowArray(row);
        });
        return { events, full: events.length >= limit || bytes >= maxBatchBytes };
      }),
    headPosition: () =>
      readOrUnavailable('reading the event log head', async () => {
        const { rows } = await pool.query<{ position: string }>(
          `SELECT position::text AS position FROM event_log_head WHERE id = 1`,
        );
        return BigInt(rows[0]?.position ?? '0');
      }),
    horizon: () =>
      readOrUnavailable("reading the event log's horizon", async () => {
        const { rows } = await pool.query<{ position: string }>(
          `SELECT position::text AS position FROM event_log_horizon`,
        );
        return BigInt(rows[0]?.position ?? '0');
      }),
    eventsOf: (evalIds, upTo) =>
      readOrUnavailable("reading evaluations' events", async () => {
        const { rows } = await everyTenant<EventRow>(pool, {
          text: `SELECT ${COLUMNS} FROM evaluation_events WHERE eval_id = ANY($1) AND position <= $2 ORDER BY evaluation_events.position`,
          values: [evalIds, upTo.toString()],
        });
        return rows.map(toRecordedEvent);
      }),
    firstPositionOf: (evalId) =>
      readOrUnavailable('looking an evaluation up in the event log', async () => {
        const { rows } = await everyTenant<{ position: string }>(pool, {
          text: `SELECT position::text AS position FROM evaluation_events WHERE eval_id = $1 AND revision = 1`,
          values: [evalId],
        });
        const position = rows[0]?.position;
        return position === undefined ? undefined : BigInt(position);
      }),
    recordedAt: (position) =>
      readOrUnavailable('reading the event log', async () => {
        const { rows } = await everyTenant<{ recorded_at: Date }>(pool, {
          text: `SELECT recorded_at FROM evaluation_events WHERE position = $1`,
          values: [position.toString()],
        });
        return rows[0]?.recorded_at;
      }),
  };
}

/** A read of every tenant's rows: the projection and the checks serve them all. */
function everyTenant<R extends QueryResultRow>(pool: Pool, statement: QueryConfig): Promise<QueryResult<R>> {
  return queryAs<R>(pool, ALL_TENANTS, statement);
}

/**
 * Evaluations' metadata from their submit events, encoded as the read models' states hold it:
 * for changes whose record is gone from Redis (redis/metadata-source.ts).
 */
export function createPostgresMetadataFromLog(pool: Pool): MetadataFromLog {
  return (evalIds) =>
    readOrUnavailable("reading evaluations' metadata", async () => {
      const { rows } = await everyTenant<{ eval_id: string; metadata: unknown }>(pool, {
        text: `SELECT eval_id, data->'metadata' AS metadata FROM evaluation_events WHERE eval_id = ANY($1) AND revision = 1`,
        values: [evalIds],
      });
      return new Map(
        rows.map((row): [string, Metadata] => [
          row.eval_id,
          typeof row.metadata === 'object' && row.metadata !== null
            ? encodeStruct(row.metadata as Record<string, unknown>)
            : null,
        ]),
      );
    });
}

/** The evaluations and their events, for the consistency checker. */
export function createPostgresEvaluationSource(pool: Pool): EvaluationSource {
  return {
    evaluationIds: (after, limit) =>
      readOrUnavailable('listing evaluations', async () => {
        const { rows } = await everyTenant<{ eval_id: string }>(pool, {
          text: `SELECT eval_id FROM evaluations e WHERE eval_id > $1
                    AND NOT EXISTS (SELECT 1 FROM archived_evaluations a WHERE a.eval_id = e.eval_id)
                  ORDER BY eval_id LIMIT $2`,
          values: [after, limit],
        });
        return rows.map((r) => r.eval_id);
      }),
    archived: (evalIds) =>
      readOrUnavailable('looking up archived evaluations', async () => {
        if (evalIds.length === 0) return new Set<string>();
        const { rows } = await everyTenant<{ eval_id: string }>(pool, {
          text: `SELECT eval_id FROM archived_evaluations WHERE eval_id = ANY ($1)`,
          values: [evalIds],
        });
        return new Set(rows.map((r) => r.eval_id));
      }),
    eventsOfMany: (evalIds, upTo) =>
      readOrUnavailable('reading events', async () => {
        const { rows } = await everyTenant<EventRow>(pool, {
          text: `SELECT ${COLUMNS} FROM evaluation_events WHERE eval_id = ANY($1) AND position <= $2 ORDER BY evaluation_events.position`,
          values: [evalIds, upTo.toString()],
        });
        return rows.map(toRecordedEvent);
      }),
  };
}
