import type { Client } from 'pg';

/**
 * The database roles of least privilege (docs/security.md). The migrations create the two
 * NOLOGIN roles and grant them what each service does, nothing more; a deployment gives each
 * service a login that is a member of its role. Roles are cluster-wide: several databases of one
 * server share them.
 */
export const WRITER_ROLE = 'crucible_writer';
export const READER_ROLE = 'crucible_reader';

/** The logins `make up` and the tests run the services as (members of the roles above). */
export const SERVICE_LOGINS = [
  { login: 'crucible_command', memberOf: WRITER_ROLE },
  { login: 'crucible_query', memberOf: READER_ROLE },
] as const;

export type ServiceLogin = (typeof SERVICE_LOGINS)[number]['login'];

/**
 * Creates the service logins when missing (members of their roles, which the migrations must have
 * created), with the password of `ownerUrl` when it has one, so that they authenticate as it
 * does. `admin` is connected as a role that may create roles.
 */
export async function ensureServiceLogins(admin: Client, ownerUrl: string): Promise<void> {
  const password = decodeURIComponent(new URL(ownerUrl).password);
  const withPassword = password === '' ? '' : ` PASSWORD '${password.replace(/'/g, "''")}'`;
  for (const { login, memberOf } of SERVICE_LOGINS) {
    const exists = await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [login]);
    if (exists.rowCount === 0) {
      await admin.query(`CREATE ROLE ${login} LOGIN${withPassword} IN ROLE ${memberOf}`).catch((err: unknown) => {
        // 42710 duplicate_object: created meanwhile by another test or stack, which is what we wanted.
        if ((err as { code?: unknown }).code !== '42710') throw err;
      });
    }
  }
}

/**
 * The database settings of services that run as their logins, given the owner's URL: the
 * command service migrates as the owner and serves as `crucible_command`, the query service
 * reads as `crucible_query`.
 */
export function serviceDatabaseUrls(ownerUrl: string): {
  readonly MIGRATION_DATABASE_URL: string;
  readonly DATABASE_URL: string;
  readonly QUERY_DATABASE_URL: string;
} {
  return {
    MIGRATION_DATABASE_URL: ownerUrl,
    DATABASE_URL: asLogin(ownerUrl, 'crucible_command'),
    QUERY_DATABASE_URL: asLogin(ownerUrl, 'crucible_query'),
  };
}

/** `url` with `login` as its user (and the same password, host and database). */
export function asLogin(url: string, login: ServiceLogin): string {
  const parsed = new URL(url);
  parsed.username = login;
  return parsed.toString();
}
