import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A read-only role for the query side. It is NOLOGIN: deployments grant it to the login role
 * they give the query service (`GRANT crucible_reader TO ...`); the query service also opens
 * its sessions read-only, so a bug there can never write. Roles are cluster-wide, hence the
 * existence check (several databases of one cluster share it).
 */
export class CreateReaderRole1763877600006 implements MigrationInterface {
  name = 'CreateReaderRole1763877600006';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      DO $$ BEGIN
        CREATE ROLE crucible_reader NOLOGIN;
      EXCEPTION WHEN duplicate_object THEN NULL;
      END $$`);
    await q.query(`GRANT USAGE ON SCHEMA public TO crucible_reader`);
    await q.query(`
      GRANT SELECT ON evaluations, evaluation_events, event_log_head, evaluation_bodies,
        evaluation_metrics, security_audit, security_events TO crucible_reader`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      REVOKE ALL ON evaluations, evaluation_events, event_log_head, evaluation_bodies,
        evaluation_metrics, security_audit, security_events FROM crucible_reader`);
  }
}
