import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Who reported each event: the caller's identity (a token's `sub`, a certificate's mapped
 * name, `anonymous` without authentication), or `crucible-storage` for what the service decided
 * itself. Events written before this have none (NULL): nobody recorded it then.
 */
export class EventReporters1763877600015 implements MigrationInterface {
  name = 'EventReporters1763877600015';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE evaluation_events ADD COLUMN reporter text`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE evaluation_events DROP COLUMN reporter`);
  }
}
