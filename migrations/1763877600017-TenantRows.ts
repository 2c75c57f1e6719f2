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
 * setting, and the CHECK admits tenant names only, so nothing can be written under `*`; nor
 * without a tenant (the policy refuses it). The table owner (the migrator, the operations
 * tools) is not subject to the policies; the services' roles are.
 *
 * A request id is unique per tenant (one tenant's retry never collides with another's id);
 * evaluation ids stay unique across tenants, as the read models key them.
 *
 * What the policies alone would leave open (test/integration/command/tenant-rls.test.ts):
 * - Foreign keys are checked past row-level security: a row of one tenant could name another
 *   tenant's evaluation (and learn that its id exists). Each row's key to its evaluation is
 *   therefore (eval_id, tenant_id): it finds the evaluation only within its own tenant.
 * - A statement could change the setting it is filtered by (`set_config` inside a query is
 *   evaluated before the scan). The services set it with `SET LOCAL`, a statement of its own,
 *   and `set_config` is revoked from PUBLIC (granted back to the owner, whose tools use it) where
 *   the migrator may; on a managed PostgreSQL whose migrator may not, its admin runs the REVOKE.
 * - The writer may update an evaluation's row, but not move it to another tenant (or rename
 *   it): its UPDATE grant on `evaluations` names every other column. A later migration that
 *   adds a column the command service updates grants it.
 */
export class TenantRows1763877600017 implements MigrationInterface {
  name = 'TenantRows1763877600017';

  async up(q: QueryRunner): Promise<void> {
    for (const table of TENANT_TABLES) {
      // A constant default fills the existing rows without rewriting the table.
      await q.query(`ALTER TABLE ${table} ADD COLUMN tenant_id text NOT NULL DEFAULT 'default'`);
      // The transaction's tenant. A session without one is refused by the policy before the
      // default matters; only the owner (which the policies do not hold) writes without one,
      // and its rows are the default tenant's, as every row stored before tenants.
      await q.query(
        `ALTER TABLE ${table} ALTER COLUMN tenant_id SET DEFAULT coalesce(nullif(current_setting('crucible.tenant', true), ''), 'default')`,
      );
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
    await q.query(`ALTER TABLE evaluations ADD CONSTRAINT evaluations_tenant_key UNIQUE (eval_id, tenant_id)`);
    for (const table of TENANT_TABLES.filter((t) => t !== 'evaluations')) {
      await q.query(`ALTER TABLE ${table} DROP CONSTRAINT ${table}_eval_id_fkey`);
      // NOT VALID, then VALIDATE: the check of the existing rows does not block writes.
      await q.query(
        `ALTER TABLE ${table} ADD CONSTRAINT ${table}_eval_tenant_fkey FOREIGN KEY (eval_id, tenant_id)
           REFERENCES evaluations (eval_id, tenant_id) NOT VALID`,
      );
      await q.query(`ALTER TABLE ${table} VALIDATE CONSTRAINT ${table}_eval_tenant_fkey`);
    }
    await q.query(`
      DO $$
      DECLARE columns text;
      BEGIN
        SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position) INTO columns
          FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'evaluations'
           AND column_name NOT IN ('eval_id', 'tenant_id');
        REVOKE UPDATE ON evaluations FROM crucible_writer;
        EXECUTE format('GRANT UPDATE (%s) ON evaluations TO crucible_writer', columns);
      END $$`);
    await q.query(`
      DO $$
      BEGIN
        REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC;
        EXECUTE format('GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO %I', current_user);
      EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'set_config stays executable by PUBLIC: only its owner may revoke it (docs/security.md)';
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DO $$
      BEGIN
        GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO PUBLIC;
      EXCEPTION WHEN insufficient_privilege THEN NULL;
      END $$`);
    await q.query(`GRANT UPDATE ON evaluations TO crucible_writer`);
    for (const table of TENANT_TABLES.filter((t) => t !== 'evaluations')) {
      await q.query(`ALTER TABLE ${table} DROP CONSTRAINT ${table}_eval_tenant_fkey`);
      await q.query(
        `ALTER TABLE ${table} ADD CONSTRAINT ${table}_eval_id_fkey FOREIGN KEY (eval_id) REFERENCES evaluations (eval_id)`,
      );
    }
    await q.query(`ALTER TABLE evaluations DROP CONSTRAINT evaluations_tenant_key`);
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
