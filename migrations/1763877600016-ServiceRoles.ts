import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The command service's role of least privilege, `crucible_writer`: it reads everything it
 * decides on and adds rows, but it cannot rewrite history: no UPDATE or DELETE on the event log,
 * the metric points or the security audit; of the bodies and log segments it may change only
 * where a blob is kept (the blob mover), of an upload only its state. Nothing may be deleted.
 * `crucible_reader` (the query side, migration 6) already reads all of it.
 *
 * A table added later grants its privileges in its own migration. NOLOGIN, as crucible_reader:
 * deployments grant it to the command service's login (`make up` makes `crucible_command`).
 */
export class ServiceRoles1763877600016 implements MigrationInterface {
  name = 'ServiceRoles1763877600016';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      DO $$ BEGIN
        CREATE ROLE crucible_writer NOLOGIN;
      EXCEPTION WHEN duplicate_object THEN NULL;
      END $$`);
    await q.query(`GRANT USAGE ON SCHEMA public TO crucible_writer`);
    await q.query(`GRANT SELECT, INSERT, UPDATE ON evaluations TO crucible_writer`);
    await q.query(
      `GRANT SELECT, INSERT ON evaluation_events, evaluation_metrics, security_audit, security_events TO crucible_writer`,
    );
    await q.query(`GRANT SELECT, UPDATE ON event_log_head TO crucible_writer`);
    await q.query(
      `GRANT SELECT, INSERT, UPDATE (blob_store) ON evaluation_bodies, evaluation_log_segments TO crucible_writer`,
    );
    await q.query(`GRANT SELECT, INSERT, UPDATE (state) ON output_uploads TO crucible_writer`);
    await q.query(`GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO crucible_writer`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      REVOKE ALL ON evaluations, evaluation_events, evaluation_metrics, security_audit, security_events,
        event_log_head, evaluation_bodies, evaluation_log_segments, output_uploads FROM crucible_writer`);
    await q.query(`REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM crucible_writer`);
    await q.query(`REVOKE USAGE ON SCHEMA public FROM crucible_writer`);
  }
}
