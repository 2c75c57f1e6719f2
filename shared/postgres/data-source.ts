import { Client } from 'pg';
import { DataSource } from 'typeorm';
import { MIGRATIONS } from '../../migrations';
import type { PostgresOptions } from './pool';

/**
 * Any number that no other tool of the database uses: the advisory lock migrations hold, so
 * that two instances starting on a fresh database do not both apply the same migration.
 */
const MIGRATION_LOCK = 0x63727563; // "cruc"

/**
 * Applies every pending migration (TypeORM, each in its own transaction) while holding the
 * migration lock on a session of its own. Returns the names applied (none when another
 * instance applied them while this one waited for the lock).
 */
export async function runMigrations(options: Omit<PostgresOptions, 'poolSize' | 'readOnly'>): Promise<string[]> {
  const lock = new Client({ connectionString: options.url, application_name: `${options.applicationName}-migrations` });
  await lock.connect();
  try {
    await lock.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    // `synchronize` is off: the schema changes only through migrations.
    const dataSource = new DataSource({
      type: 'postgres',
      url: options.url,
      migrations: MIGRATIONS,
      migrationsTableName: 'migrations',
      synchronize: false,
      logging: false,
      applicationName: options.applicationName,
      poolSize: 1,
    });
    await dataSource.initialize();
    try {
      const applied = await dataSource.runMigrations({ transaction: 'each' });
      return applied.map((m) => m.name);
    } finally {
      await dataSource.destroy();
    }
  } finally {
    // Ending the session releases the lock too; unlocking first lets a waiter go on at once.
    await lock.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    await lock.end();
  }
}
