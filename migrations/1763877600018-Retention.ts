import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Retention and tiering (docs/operations.md "Retention"), run by the table owner (the retention
 * job connects with MIGRATION_DATABASE_URL); the services' roles still delete nothing.
 *
 * - `archived_evaluations`: one row per evaluation whose data went to the S3 archive (the object
 *   and what it holds). Its `evaluations` row stays as the tombstone: the id is never reused,
 *   commands on it meet its terminal status, and its security records keep their reference.
 * - `event_log_horizon`: the position at or below which events may have left the log. Events
 *   leave only as a prefix (every event at or below it belongs to an archived evaluation), so
 *   every position above it is still there and a reader of the log after it never meets a hole.
 * - `retention_runs`: each run's report.
 * - `evaluations.logs_expired_at`: when LOG_RETENTION deleted the evaluation's logs.
 * - `evaluations.archived_at`: set in the transaction that records the archive. The command
 *   service's UPDATE of the row requires it NULL (append-statement.ts), and PostgreSQL re-checks
 *   that on the row it waited for: no event is appended to an evaluation once it is archived,
 *   so an archive always holds every event of its evaluation. The writer may not set it.
 * - The append-only triggers let exactly that through: a DELETE of events at or below the
 *   horizon whose evaluation is archived, and a DELETE of security records older than what the
 *   session names as the purge line (`crucible.security_purge_before`, set by the retention job
 *   alone). UPDATE and TRUNCATE stay refused, whatever the role.
 */
export class Retention1763877600018 implements MigrationInterface {
  name = 'Retention1763877600018';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE archived_evaluations (
        eval_id         text PRIMARY KEY,
        tenant_id       text NOT NULL,
        archive_key     text NOT NULL,
        archived_at     timestamptz NOT NULL,
        first_position  bigint NOT NULL,
        last_position   bigint NOT NULL,
        events          integer NOT NULL CHECK (events >= 1),
        bytes           bigint NOT NULL CHECK (bytes >= 0),
        sha256          char(64) NOT NULL,
        FOREIGN KEY (eval_id, tenant_id) REFERENCES evaluations (eval_id, tenant_id)
      )`);
    await q.query(`ALTER TABLE archived_evaluations ENABLE ROW LEVEL SECURITY`);
    await q.query(`
      CREATE POLICY tenant_isolation ON archived_evaluations
        USING (current_setting('crucible.tenant', true) IN (tenant_id, '*'))`);
    await q.query(`
      CREATE TABLE event_log_horizon (
        only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        position  bigint NOT NULL DEFAULT 0 CHECK (position >= 0)
      )`);
    await q.query(`INSERT INTO event_log_horizon DEFAULT VALUES`);
    await q.query(`
      CREATE TABLE retention_runs (
        run_id       bigserial PRIMARY KEY,
        started_at   timestamptz NOT NULL,
        finished_at  timestamptz,
        clock        timestamptz NOT NULL,
        dry_run      boolean NOT NULL,
        report       jsonb NOT NULL DEFAULT '{}'
      )`);
    // Set once LOG_RETENTION deleted an evaluation's logs: ReadLogs then says so.
    await q.query(`ALTER TABLE evaluations ADD COLUMN logs_expired_at timestamptz, ADD COLUMN archived_at timestamptz`);
    await q.query(`GRANT SELECT ON archived_evaluations, event_log_horizon TO crucible_reader`);
    await q.query(`GRANT SELECT ON archived_evaluations TO crucible_writer`);

    await q.query(`DROP TRIGGER evaluation_events_append_only ON evaluation_events`);
    await q.query(`
      CREATE TRIGGER evaluation_events_append_only
      BEFORE UPDATE OR TRUNCATE ON evaluation_events
      FOR EACH STATEMENT EXECUTE FUNCTION evaluation_events_append_only()`);
    await q.query(`
      CREATE FUNCTION evaluation_events_retire() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF OLD.position <= (SELECT position FROM event_log_horizon)
           AND EXISTS (SELECT 1 FROM archived_evaluations
                        WHERE eval_id = OLD.eval_id AND OLD.position <= last_position) THEN
          RETURN OLD;
        END IF;
        RAISE EXCEPTION 'evaluation_events is append-only: only archived events at or below the horizon leave it (position % refused)', OLD.position;
      END $$`);
    await q.query(`
      CREATE TRIGGER evaluation_events_retire
      BEFORE DELETE ON evaluation_events
      FOR EACH ROW EXECUTE FUNCTION evaluation_events_retire()`);

    await q.query(`
      CREATE FUNCTION security_records_purge() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE purge_before text := nullif(current_setting('crucible.security_purge_before', true), '');
      BEGIN
        IF purge_before IS NOT NULL AND OLD.recorded_at < purge_before::timestamptz THEN
          RETURN OLD;
        END IF;
        RAISE EXCEPTION '% is append-only: only records past SECURITY_RETENTION are purged (position % refused)', TG_TABLE_NAME, OLD.position;
      END $$`);
    for (const table of ['security_audit', 'security_events']) {
      await q.query(`DROP TRIGGER ${table}_append_only ON ${table}`);
      await q.query(`
        CREATE TRIGGER ${table}_append_only
        BEFORE UPDATE OR TRUNCATE ON ${table}
        FOR EACH STATEMENT EXECUTE FUNCTION security_records_append_only()`);
      await q.query(`
        CREATE TRIGGER ${table}_purge
        BEFORE DELETE ON ${table}
        FOR EACH ROW EXECUTE FUNCTION security_records_purge()`);
    }
    // The retention job finds what aged along these.
    await q.query(
      `CREATE INDEX evaluations_unarchived_idx ON evaluations (updated_at)
        WHERE status IN ('completed', 'failed', 'cancelled') AND archived_at IS NULL`,
    );
    await q.query(
      `CREATE INDEX evaluation_log_segments_inline_idx ON evaluation_log_segments (recorded_at) WHERE content IS NOT NULL`,
    );
    await q.query(`CREATE INDEX evaluation_log_segments_recorded_idx ON evaluation_log_segments (recorded_at)`);
    await q.query(`CREATE INDEX archived_evaluations_first_idx ON archived_evaluations (first_position)`);
    await q.query(`CREATE INDEX security_audit_recorded_idx ON security_audit (recorded_at)`);
    await q.query(`CREATE INDEX security_events_recorded_idx ON security_events (recorded_at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    const rows = (await q.query(`SELECT count(*)::int AS n FROM archived_evaluations`)) as { n: number }[];
    if ((rows[0]?.n ?? 0) > 0)
      throw new Error('evaluations were archived (their events left the log): this migration cannot be undone');
    await q.query(`DROP INDEX security_events_recorded_idx`);
    await q.query(`DROP INDEX security_audit_recorded_idx`);
    await q.query(`DROP INDEX evaluation_log_segments_recorded_idx`);
    await q.query(`DROP INDEX evaluation_log_segments_inline_idx`);
    await q.query(`DROP INDEX evaluations_unarchived_idx`);
    for (const table of ['security_audit', 'security_events']) {
      await q.query(`DROP TRIGGER ${table}_purge ON ${table}`);
      await q.query(`DROP TRIGGER ${table}_append_only ON ${table}`);
      await q.query(`
        CREATE TRIGGER ${table}_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON ${table}
        FOR EACH STATEMENT EXECUTE FUNCTION security_records_append_only()`);
    }
    await q.query(`DROP FUNCTION security_records_purge()`);
    await q.query(`DROP TRIGGER evaluation_events_retire ON evaluation_events`);
    await q.query(`DROP FUNCTION evaluation_events_retire()`);
    await q.query(`DROP TRIGGER evaluation_events_append_only ON evaluation_events`);
    await q.query(`
      CREATE TRIGGER evaluation_events_append_only
      BEFORE UPDATE OR DELETE OR TRUNCATE ON evaluation_events
      FOR EACH STATEMENT EXECUTE FUNCTION evaluation_events_append_only()`);
    await q.query(`ALTER TABLE evaluations DROP COLUMN logs_expired_at, DROP COLUMN archived_at`);
    await q.query(`DROP TABLE retention_runs`);
    await q.query(`DROP TABLE event_log_horizon`);
    await q.query(`DROP TABLE archived_evaluations`);
  }
}
