import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Current state of each evaluation: the command side's write model. */
export class CreateEvaluations1763877600000 implements MigrationInterface {
  name = 'CreateEvaluations1763877600000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE evaluations (
        eval_id          text PRIMARY KEY,
        status           text NOT NULL
                         CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
        code             text NOT NULL,
        code_hash        char(64) NOT NULL,
        code_size        integer NOT NULL,
        language         text NOT NULL,
        engine           text NOT NULL,
        timeout_seconds  integer NOT NULL,
        metadata         jsonb NOT NULL DEFAULT '{}',
        executor_id      text,
        container_id     text,
        exit_code        integer,
        failure_reason   text CHECK (failure_reason IN ('error', 'timeout')),
        cancel_reason    text,
        output_preview   bytea,
        output_size      bigint NOT NULL DEFAULT 0,
        output_location  text NOT NULL DEFAULT '',
        error_preview    text,
        error_size       bigint NOT NULL DEFAULT 0,
        error_location   text NOT NULL DEFAULT '',
        created_at       timestamptz NOT NULL,
        started_at       timestamptz,
        completed_at     timestamptz,
        updated_at       timestamptz NOT NULL,
        revision         bigint NOT NULL CHECK (revision >= 1)
      )`);
    // Listing by time, optionally by status, newest first (admin and analytics queries; the
    // API lists from the Redis read model).
    await q.query(`CREATE INDEX evaluations_created_idx ON evaluations (created_at DESC, eval_id DESC)`);
    await q.query(`CREATE INDEX evaluations_status_created_idx ON evaluations (status, created_at DESC, eval_id DESC)`);
    await q.query(`CREATE INDEX evaluations_code_hash_idx ON evaluations (code_hash)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE evaluations`);
  }
}
