import type { Pool } from 'pg';
import type { DataSource } from 'typeorm';
import { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';

/**
 * The `pg` pool behind an initialised DataSource. Hot paths use it directly: TypeORM's query
 * runner adds a runner checkout, event broadcasting and result reshaping to every statement,
 * which a one-statement command does not need. TypeORM still owns the pool's lifecycle.
 */
export function poolOf(dataSource: DataSource): Pool {
  const driver = dataSource.driver;
  if (!(driver instanceof PostgresDriver) || driver.master === undefined) {
    throw new Error('poolOf needs an initialised PostgreSQL DataSource');
  }
  return driver.master as Pool;
}
