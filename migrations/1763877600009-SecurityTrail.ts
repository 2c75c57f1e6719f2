import type { MigrationInterface, QueryRunner } from 'typeorm';

const EVENT_TYPES = [
  'EvaluationQueued',
  'EvaluationStarted',
  'EvaluationCompleted',
  'EvaluationFailed',
  'EvaluationCancelled',
  'EvaluationMetricsRecorded',
];

const VIOLATION_TYPES = ['memory', 'cpu', 'pids', 'disk', 'network', 'syscall', 'timeout', 'other'];

const quoted = (names: readonly string[]): string => names.map((n) => `'${n}'`).join(', ');

/**
 * The security tables as RecordSecurityEvent writes them: one row per event of the log (its
 * position, unique, is the order ListSecurityEvents pages by; its revision), the reporter's time
 * beside the service's, every row tied to an evaluation; append-only, as `evaluation_events` is
 * (a trigger refuses UPDATE, DELETE and TRUNCATE, whatever the role). Also the service's own
 * failure reason, `executor_lost` (the zombie reaper's). No writer existed before: the tables are
 * empty, so the new columns need no default.
 */
export class SecurityTrail1763877600009 implements MigrationInterface {
  name = 'SecurityTrail1763877600009';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE evaluation_events DROP CONSTRAINT evaluation_events_event_type_check,
        ADD CONSTRAINT evaluation_events_event_type_check CHECK (event_type IN (${quoted([
          ...EVENT_TYPES,
          'EvaluationContainerCreated',
          'EvaluationSecurityViolation',
        ])}))`);
    await q.query(`
      ALTER TABLE evaluations DROP CONSTRAINT evaluations_failure_reason_check,
        ADD CONSTRAINT evaluations_failure_reason_check CHECK (failure_reason IN ('error', 'timeout', 'executor_lost'))`);
    await q.query(`
      ALTER TABLE security_audit
        ALTER COLUMN eval_id SET NOT NULL,
        ADD COLUMN occurred_at timestamptz NOT NULL,
        ADD COLUMN revision bigint NOT NULL CHECK (revision >= 1),
        ADD COLUMN position bigint NOT NULL UNIQUE`);
    await q.query(`DROP INDEX security_audit_eval_idx`);
    await q.query(`DROP INDEX security_audit_container_idx`);
    await q.query(`CREATE INDEX security_audit_eval_idx ON security_audit (eval_id, position)`);
    await q.query(`CREATE INDEX security_audit_container_idx ON security_audit (container_id, position)`);
    await q.query(`
      ALTER TABLE security_events
        ALTER COLUMN eval_id SET NOT NULL,
        ADD CONSTRAINT security_events_violation_type_check CHECK (violation_type IN (${quoted(VIOLATION_TYPES)})),
        ADD COLUMN action_taken text NOT NULL DEFAULT '',
        ADD COLUMN occurred_at timestamptz NOT NULL,
        ADD COLUMN revision bigint NOT NULL CHECK (revision >= 1),
        ADD COLUMN position bigint NOT NULL UNIQUE`);
    await q.query(`DROP INDEX security_events_eval_idx`);
    await q.query(`DROP INDEX security_events_type_idx`);
    await q.query(`CREATE INDEX security_events_eval_idx ON security_events (eval_id, position)`);
    await q.query(`CREATE INDEX security_events_container_idx ON security_events (container_id, position)`);
    await q.query(`CREATE INDEX security_events_type_idx ON security_events (violation_type, position)`);
    await q.query(`
      CREATE FUNCTION security_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP;
      END $$`);
    for (const table of ['security_audit', 'security_events']) {
      await q.query(`
        CREATE TRIGGER ${table}_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON ${table}
        FOR EACH STATEMENT EXECUTE FUNCTION security_records_append_only()`);
    }
  }

  async down(q: QueryRunner): Promise<void> {
    for (const table of ['security_audit', 'security_events']) {
      await q.query(`DROP TRIGGER ${table}_append_only ON ${table}`);
    }
    await q.query(`DROP FUNCTION security_records_append_only()`);
    await q.query(`DROP INDEX security_events_container_idx`);
    await q.query(`
      ALTER TABLE security_events
        DROP CONSTRAINT security_events_violation_type_check,
        DROP COLUMN action_taken, DROP COLUMN occurred_at, DROP COLUMN revision, DROP COLUMN position,
        ALTER COLUMN eval_id DROP NOT NULL`);
    await q.query(`
      ALTER TABLE security_audit
        DROP COLUMN occurred_at, DROP COLUMN revision, DROP COLUMN position,
        ALTER COLUMN eval_id DROP NOT NULL`);
    await q.query(`
      ALTER TABLE evaluations DROP CONSTRAINT evaluations_failure_reason_check,
        ADD CONSTRAINT evaluations_failure_reason_check CHECK (failure_reason IN ('error', 'timeout'))`);
    await q.query(`
      ALTER TABLE evaluation_events DROP CONSTRAINT evaluation_events_event_type_check,
        ADD CONSTRAINT evaluation_events_event_type_check CHECK (event_type IN (${quoted(EVENT_TYPES)}))`);
  }
}
