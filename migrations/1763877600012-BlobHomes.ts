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
  'EvaluationLogsAppended',
];

const quoted = (names: readonly string[]): string => names.map((n) => `'${n}'`).join(', ');

/**
 * Where each blob (a large body, a large log segment) is: `blob_store` says which store holds
 * the object named by `s3_key`, S3 or, while S3 was unreachable, the fallback file store
 * (BLOB_FALLBACK_DIR) until the mover copies it over and records EvaluationBlobMoved. Indexes
 * for the mover (what is still in the file store) and the orphan sweeper (is a key referred to).
 */
export class BlobHomes1763877600012 implements MigrationInterface {
  name = 'BlobHomes1763877600012';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE evaluation_events DROP CONSTRAINT evaluation_events_event_type_check,
        ADD CONSTRAINT evaluation_events_event_type_check
        CHECK (event_type IN (${quoted([...EVENT_TYPES, 'EvaluationBlobMoved'])}))`);
    for (const table of ['evaluation_bodies', 'evaluation_log_segments']) {
      await q.query(`
        ALTER TABLE ${table}
          ADD COLUMN blob_store text NOT NULL DEFAULT 's3' CHECK (blob_store IN ('s3', 'file'))`);
      await q.query(`CREATE INDEX ${table}_key_idx ON ${table} (s3_key) WHERE s3_key IS NOT NULL`);
      await q.query(`CREATE INDEX ${table}_fallback_idx ON ${table} (eval_id) WHERE blob_store = 'file'`);
    }
  }

  async down(q: QueryRunner): Promise<void> {
    const rows = (await q.query(
      `SELECT (SELECT count(*) FROM evaluation_events WHERE event_type = 'EvaluationBlobMoved')
            + (SELECT count(*) FROM evaluation_bodies WHERE blob_store = 'file')
            + (SELECT count(*) FROM evaluation_log_segments WHERE blob_store = 'file') AS n`,
    )) as { n: string }[];
    if (Number(rows[0]?.n ?? 0) > 0) {
      throw new Error('cannot revert: blobs were kept in the fallback store (events of it, or blobs still there)');
    }
    for (const table of ['evaluation_bodies', 'evaluation_log_segments']) {
      await q.query(`DROP INDEX ${table}_fallback_idx`);
      await q.query(`DROP INDEX ${table}_key_idx`);
      await q.query(`ALTER TABLE ${table} DROP COLUMN blob_store`);
    }
    await q.query(`
      ALTER TABLE evaluation_events DROP CONSTRAINT evaluation_events_event_type_check,
        ADD CONSTRAINT evaluation_events_event_type_check CHECK (event_type IN (${quoted(EVENT_TYPES)}))`);
  }
}
