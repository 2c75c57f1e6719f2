import type { MigrationInterface, QueryRunner } from 'typeorm';

const EVENT_TYPES = [
  'EvaluationQueued',
  'EvaluationStarted',
  'EvaluationCompleted',
  'EvaluationFailed',
  'EvaluationCancelled',
  'EvaluationMetricsRecorded',
  'EvaluationContainerCreated',
  'EvaluationSecurityViolation',
];

const quoted = (names: readonly string[]): string => names.map((n) => `'${n}'`).join(', ');

/**
 * An evaluation's logs (AppendLogs): each stream a run of segments, gap-free by construction
 * (a segment starts where the stream's stored size, kept on the evaluation's row, ends: the
 * same statement checks one and moves the other), each written with its event
 * (EvaluationLogsAppended) at the event's revision and position. Small segments keep their
 * bytes here, large ones in S3 with the key here, as bodies do.
 */
export class LiveLogs1763877600011 implements MigrationInterface {
  name = 'LiveLogs1763877600011';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE evaluation_events DROP CONSTRAINT evaluation_events_event_type_check,
        ADD CONSTRAINT evaluation_events_event_type_check
        CHECK (event_type IN (${quoted([...EVENT_TYPES, 'EvaluationLogsAppended'])}))`);
    await q.query(`
      ALTER TABLE evaluations
        ADD COLUMN stdout_bytes bigint NOT NULL DEFAULT 0 CHECK (stdout_bytes >= 0),
        ADD COLUMN stderr_bytes bigint NOT NULL DEFAULT 0 CHECK (stderr_bytes >= 0)`);
    await q.query(`
      CREATE TABLE evaluation_log_segments (
        eval_id       text NOT NULL REFERENCES evaluations (eval_id),
        stream        text NOT NULL CHECK (stream IN ('stdout', 'stderr')),
        start_offset  bigint NOT NULL CHECK (start_offset >= 0),
        size          bigint NOT NULL CHECK (size > 0),
        content       bytea,
        s3_key        text,
        revision      bigint NOT NULL CHECK (revision >= 1),
        position      bigint NOT NULL UNIQUE,
        recorded_at   timestamptz NOT NULL,
        PRIMARY KEY (eval_id, stream, start_offset),
        CHECK ((content IS NULL) <> (s3_key IS NULL))
      )`);
    await q.query(`GRANT SELECT ON evaluation_log_segments TO crucible_reader`);
  }

  async down(q: QueryRunner): Promise<void> {
    // The log is append-only: events of this kind cannot be taken out of it, so a database that
    // has any cannot go back.
    const rows = (await q.query(
      `SELECT count(*)::int AS n FROM evaluation_events WHERE event_type = 'EvaluationLogsAppended'`,
    )) as { n: number }[];
    if ((rows[0]?.n ?? 0) > 0) throw new Error('cannot revert: the event log holds EvaluationLogsAppended events');
    await q.query(`DROP TABLE evaluation_log_segments`);
    await q.query(`ALTER TABLE evaluations DROP COLUMN stdout_bytes, DROP COLUMN stderr_bytes`);
    await q.query(`
      ALTER TABLE evaluation_events DROP CONSTRAINT evaluation_events_event_type_check,
        ADD CONSTRAINT evaluation_events_event_type_check CHECK (event_type IN (${quoted(EVENT_TYPES)}))`);
  }
}
