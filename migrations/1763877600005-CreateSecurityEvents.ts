import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Security violations seen in a sandbox (e.g. RESOURCE_VIOLATION), kept for analysis. */
export class CreateSecurityEvents1763877600005 implements MigrationInterface {
  name = 'CreateSecurityEvents1763877600005';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE security_events (
        id              bigserial PRIMARY KEY,
        eval_id         text REFERENCES evaluations (eval_id),
        container_id    text NOT NULL,
        violation_type  text NOT NULL,
        severity        text NOT NULL DEFAULT 'medium'
                        CHECK (severity IN ('low', 'medium', 'high', 'critical')),
        details         jsonb NOT NULL DEFAULT '{}',
        recorded_at     timestamptz NOT NULL
      )`);
    await q.query(`CREATE INDEX security_events_eval_idx ON security_events (eval_id, recorded_at)`);
    await q.query(`CREATE INDEX security_events_type_idx ON security_events (violation_type, recorded_at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE security_events`);
  }
}
