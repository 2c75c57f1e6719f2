import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Every table holding an evaluation's data: each row carries the evaluation's tenant. */
export const TENANT_TABLES = [
  'evaluations',
  'evaluation_events',
  'evaluation_bodies',
  'evaluation_metrics',
  'security_audit',
  'security_events',
  'evaluation_log_segments',
  'output_uploads',
] as const;

/**
 * Tenants, enforced by PostgreSQL itself. Every row of an evaluation's data carries its
 * `tenant_id` (rows stored before this are the `default` tenant's), and row-level security
 * lets a session see and write only the rows of the tenant its transaction names in
 * `crucible.tenant` (shared/postgres/tenancy.ts): without the setting it sees nothing, with `*`
 * (the services' own work over every tenant) everything. A new row takes the tenant from the
 * setting, and the CHECK admits tenant names only, so nothing can be written under `*` or
 * without a tenant. The table owner (the migrator, the operations tools) is not subject to the
 * policies; the services' roles are.
 *
 * A request id is unique per tenant (one tenant's retry never collides with another's id);
 * evaluation ids stay unique across tenants, as the read models key them.
 */
export class TenantRows1763877600017 implements MigrationInterface {
  name = 'TenantRows1763877600017';

  async up(q: QueryRunner): Promise<void> {
    for (const table of TENANT_TABLES) {
      // A constant default fills the existing rows without rewriting the table.
      await q.query(`ALTER TABLE ${table} ADD COLUMN tenant_id text NOT NULL DEFAULT 'default'`);
      await q.query(`ALTER TABLE ${table} ALTER COLUMN tenant_id SET DEFAULT current_setting('crucible.tenant', true)`);
      await q.query(
        `ALTER TABLE ${table} ADD CONSTRAINT ${table}_tenant_id_check CHECK (tenant_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$')`,
      );
      await q.query(`ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY`);
      await q.query(`
        CREATE POLICY tenant_isolation ON ${table}
          USING (current_setting('crucible.tenant', true) IN (tenant_id, '*'))
          WITH CHECK (current_setting('crucible.tenant', true) IN (tenant_id, '*'))`);
    }
    await q.query(`DROP INDEX evaluation_events_request_id_idx`);
    await q.query(
      `CREATE UNIQUE INDEX evaluation_events_request_id_idx ON evaluation_events (request_id, tenant_id) WHERE request_id IS NOT NULL`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX evaluation_events_request_id_idx`);
    await q.query(
      `CREATE UNIQUE INDEX evaluation_events_request_id_idx ON evaluation_events (request_id) WHERE request_id IS NOT NULL`,
    );
    for (const table of TENANT_TABLES) {
      await q.query(`DROP POLICY tenant_isolation ON ${table}`);
      await q.query(`ALTER TABLE ${table} DISABLE ROW LEVEL SECURITY`);
      await q.query(`ALTER TABLE ${table} DROP COLUMN tenant_id`);
    }
  }
}
