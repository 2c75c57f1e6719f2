export { runMigrations } from './data-source';
export { createPool, type PostgresOptions } from './pool';
export { isPostgresUnavailable, leavesOutcomeUnknown, postgresUnavailableCause, uniqueViolation } from './errors';
export { preparedStatement } from './statements';
export type { EvaluationBodyRow, EvaluationEventRow, EvaluationRow } from './rows';
export {
  asLogin,
  ensureServiceLogins,
  READER_ROLE,
  SERVICE_LOGINS,
  serviceDatabaseUrls,
  WRITER_ROLE,
} from './service-roles';
export type { ServiceLogin } from './service-roles';
export { beginIn, holdingSession, queryAs, queryInTransaction, scopeTo, TENANT_SETTING } from './tenancy';
