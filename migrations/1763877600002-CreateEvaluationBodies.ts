import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Whole outputs and error messages. Small ones are stored here; large ones in S3, with the
 * object key here. Kept out of `evaluations` so that state reads and writes stay small.
 */
export class CreateEvaluationBodies1763877600002 implements MigrationInterface {
  name = 'CreateEvaluationBodies1763877600002';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE evaluation_bodies (
        eval_id  text NOT NULL REFERENCES evaluations (eval_id),
        kind     text NOT NULL CHECK (kind IN ('output', 'error')),
        size     bigint NOT NULL CHECK (size >= 0),
        content  bytea,
        s3_key   text,
        PRIMARY KEY (eval_id, kind),
        CHECK ((content IS NULL) <> (s3_key IS NULL))
      )`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE evaluation_bodies`);
  }
}
