export { createDataSource, runMigrations } from './data-source';
export type { PostgresOptions } from './data-source';
export { isPostgresUnavailable, uniqueViolation } from './errors';
export { poolOf } from './pool';
export { preparedStatement } from './statements';
