/**
 * Tenants: every evaluation belongs to one, named by the credential that submitted it, and no
 * caller reads or changes another tenant's evaluations (docs/security.md, "Tenants").
 */

/** What a tenant name may be: it is part of Redis keys, a PostgreSQL setting and logs. */
export const TENANT_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * The tenant of AUTH_MODE=none's one caller, and of every evaluation stored before tenants
 * existed (their events name none).
 */
export const DEFAULT_TENANT = 'default';

/**
 * The tenant of a stored evaluation (an event, a state, a record): the one it names, or
 * DEFAULT_TENANT when it names none (stored before tenants existed).
 */
export function tenantOrDefault(tenant: string | undefined): string {
  return tenant === undefined || tenant === '' ? DEFAULT_TENANT : tenant;
}

/**
 * The scope of the services' own work across tenants (the projection, the reaper, the checks):
 * every tenant's rows are visible to it, and none can be added under it (no tenant is named "*").
 */
export const ALL_TENANTS = '*';
