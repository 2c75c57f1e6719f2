import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Audit trail of sandbox lifecycle (e.g. CONTAINER_CREATED with image and limits). */
export class CreateSecurityAudit1763877600004 implements MigrationInterface {
  name = 'CreateSecurityAudit1763877600004';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE security_audit (
        id            bigserial PRIMARY KEY,
        eval_id       text REFERENCES evaluations (eval_id),
        container_id  text NOT NULL,
        event_type    text NOT NULL,
        image         text,
        limits        jsonb NOT NULL DEFAULT '{}',
        details       jsonb NOT NULL DEFAULT '{}',
        recorded_at   timestamptz NOT NULL
      )`);
    await q.query(`CREATE INDEX security_audit_eval_idx ON security_audit (eval_id, recorded_at)`);
    await q.query(`CREATE INDEX security_audit_container_idx ON security_audit (container_id, recorded_at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE security_audit`);
  }
}
