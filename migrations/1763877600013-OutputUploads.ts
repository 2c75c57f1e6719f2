import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Direct uploads of outputs (CreateOutputUpload): the S3 multipart upload each one is, what the
 * executor promised (size, SHA-256), and how it ended. Not events: an upload is the transport of
 * an output, and the output enters the log with the CompleteEvaluation that refers to it.
 */
export class OutputUploads1763877600013 implements MigrationInterface {
  name = 'OutputUploads1763877600013';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE output_uploads (
        upload_id     text PRIMARY KEY,
        eval_id       text NOT NULL REFERENCES evaluations (eval_id),
        s3_upload_id  text NOT NULL,
        s3_key        text NOT NULL,
        size          bigint NOT NULL CHECK (size > 0),
        sha256        char(64) NOT NULL,
        part_size     bigint NOT NULL CHECK (part_size > 0),
        state         text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'completed', 'aborted')),
        created_at    timestamptz NOT NULL,
        expires_at    timestamptz NOT NULL
      )`);
    await q.query(`CREATE INDEX output_uploads_open_idx ON output_uploads (expires_at) WHERE state = 'open'`);
    await q.query(`GRANT SELECT ON output_uploads TO crucible_reader`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE output_uploads`);
  }
}
