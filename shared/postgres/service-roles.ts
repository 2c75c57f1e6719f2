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
 * created), with `password` when the server asks for one. Run by a role that may create roles.
 */
export async function ensureServiceLogins(admin: Client, password: string | undefined): Promise<void> {
  for (const { login, memberOf } of SERVICE_LOGINS) {
    const exists = await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [login]);
    const withPassword = password === undefined || password === '' ? '' : ` PASSWORD '${password.replace(/'/g, "''")}'`;
    if (exists.rowCount === 0) {
      await admin.query(`CREATE ROLE ${login} LOGIN${withPassword} IN ROLE ${memberOf}`).catch((err: unknown) => {
        // 42710 duplicate_object: created meanwhile by another test or stack, which is what we wanted.
        if ((err as { code?: unknown }).code !== '42710') throw err;
      });
    }
  }
}

/** `url` with `login` as its user (and the same password, host and database). */
export function asLogin(url: string, login: ServiceLogin): string {
  const parsed = new URL(url);
  parsed.username = login;
  return parsed.toString();
}
