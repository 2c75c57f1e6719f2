import { DataSource } from 'typeorm';
import { MIGRATIONS } from '../../migrations';

export interface PostgresOptions {
  readonly url: string;
  /** Pool size. */
  readonly poolSize?: number;
  /** Open every session read-only (the query side): a bug there can never write. */
  readonly readOnly?: boolean;
  readonly applicationName: string;
}

/**
 * Creates (not yet initialised) a TypeORM DataSource over `pg`, with the project's migrations.
 * `synchronize` is off: the schema changes only through migrations.
 */
export function createDataSource(options: PostgresOptions): DataSource {
  return new DataSource({
    type: 'postgres',
    url: options.url,
    migrations: MIGRATIONS,
    migrationsTableName: 'migrations',
    synchronize: false,
    logging: false,
    applicationName: options.applicationName,
    poolSize: options.poolSize ?? 10,
    extra: {
      // Fail fast when PostgreSQL is down instead of queueing callers until their deadline.
      connectionTimeoutMillis: 3000,
      ...(options.readOnly === true ? { options: '-c default_transaction_read_only=on' } : {}),
    },
  });
}

/** Applies every pending migration, each in its own transaction. Returns the names applied. */
export async function runMigrations(dataSource: DataSource): Promise<string[]> {
  const applied = await dataSource.runMigrations({ transaction: 'each' });
  return applied.map((m) => m.name);
}
