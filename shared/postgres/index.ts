export { runMigrations } from './data-source';
export { createPool, type PostgresOptions } from './pool';
export { isPostgresUnavailable, uniqueViolation } from './errors';
export { preparedStatement } from './statements';
