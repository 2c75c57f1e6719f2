import type { DataSource } from 'typeorm';
import type { EvaluationEvent, RecordedEvent } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import { isPostgresUnavailable } from '../../../shared/postgres';
import type { EvaluationSource } from '../projection/consistency-check';
import type { EventLog } from '../projection/event-log';

interface EventRow {
  position: string;
  eval_id: string;
  revision: string;
  event_type: EvaluationEvent['type'];
  data: EvaluationEvent['data'];
  recorded_at: Date;
}

const COLUMNS = `position::text AS position, eval_id, revision::text AS revision, event_type, data, recorded_at`;

export function toRecordedEvent(row: EventRow): RecordedEvent {
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
 * The event log in PostgreSQL, read through the query side's read-only connection.
 * `position > $1 ORDER BY position` is gap-safe because positions are taken under the
 * `event_log_head` row lock and so become visible in commit order (docs/event-log.md).
 */
export function createPostgresEventLog(dataSource: DataSource): EventLog {
  return {
    readAfter: (after, limit) =>
      readOrUnavailable('reading the event log', async () => {
        const rows: EventRow[] = await dataSource.query(
          `SELECT ${COLUMNS} FROM evaluation_events WHERE position > $1 ORDER BY evaluation_events.position LIMIT $2`,
          [after.toString(), limit],
        );
        return rows.map(toRecordedEvent);
      }),
    headPosition: () =>
      readOrUnavailable('reading the event log head', async () => {
        const rows: { position: string }[] = await dataSource.query(
          `SELECT position::text AS position FROM event_log_head WHERE id = 1`,
        );
        return BigInt(rows[0]?.position ?? '0');
      }),
    eventsOf: (evalId, upTo) =>
      readOrUnavailable("reading an evaluation's events", async () => {
        const rows: EventRow[] = await dataSource.query(
          `SELECT ${COLUMNS} FROM evaluation_events WHERE eval_id = $1 AND position <= $2 ORDER BY evaluation_events.revision`,
          [evalId, upTo.toString()],
        );
        return rows.map(toRecordedEvent);
      }),
    recordedAt: (position) =>
      readOrUnavailable('reading the event log', async () => {
        const rows: { recorded_at: Date }[] = await dataSource.query(
          `SELECT recorded_at FROM evaluation_events WHERE position = $1`,
          [position.toString()],
        );
        return rows[0]?.recorded_at;
      }),
  };
}

/** The evaluations and their events, for the consistency checker. */
export function createPostgresEvaluationSource(dataSource: DataSource): EvaluationSource {
  return {
    evaluationIds: (after, limit) =>
      readOrUnavailable('listing evaluations', async () => {
        const rows: { eval_id: string }[] = await dataSource.query(
          `SELECT eval_id FROM evaluations WHERE eval_id > $1 ORDER BY eval_id LIMIT $2`,
          [after, limit],
        );
        return rows.map((r) => r.eval_id);
      }),
    eventsOfMany: (evalIds, upTo) =>
      readOrUnavailable('reading events', async () => {
        const rows: EventRow[] = await dataSource.query(
          `SELECT ${COLUMNS} FROM evaluation_events WHERE eval_id = ANY($1) AND position <= $2 ORDER BY evaluation_events.position`,
          [evalIds, upTo.toString()],
        );
        return rows.map(toRecordedEvent);
      }),
  };
}
