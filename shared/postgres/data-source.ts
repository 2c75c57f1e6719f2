import { Client } from 'pg';
import { DataSource } from 'typeorm';
import { defaultPostgresSession } from '../config';
import { MIGRATIONS } from '../../migrations';
import { sessionConfig, type PostgresOptions } from './pool';

/**
 * Any number that no other tool of the database uses: the advisory lock migrations hold, so
 * that two instances starting on a fresh database do not both apply the same migration.
 */
const MIGRATION_LOCK = 0x63727563; // "cruc"

/**
 * Applies every pending migration (TypeORM, each in its own transaction) while holding the
 * migration lock on a session of its own. Returns the names applied (none when another
 * instance applied them while this one waited for the lock).
 *
 * The migrations' session has the services' lock and idle-in-transaction timeouts: a DDL
 * queued on a lock blocks every later query of that table, so it gives up after
 * `lockTimeoutMs` instead (rolled back; the caller's start-up retry runs it again). Its
 * statement timeout is `migrationStatementTimeoutMs`, since a migration's time grows with
 * the tables. The lock session has neither: it waits, as long as it takes, for another
 * instance that is migrating.
 */
export async function runMigrations(options: Omit<PostgresOptions, 'poolSize' | 'readOnly'>): Promise<string[]> {
  const session = options.session ?? defaultPostgresSession();
  const lock = new Client({
    connectionString: options.url,
    application_name: `${options.applicationName}-migrations`,
    keepAlive: true,
    keepAliveInitialDelayMillis: session.keepAliveDelayMs,
  });
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
      // pg sends no statement_timeout for 0: the server's own applies.
      extra: { ...sessionConfig(session), statement_timeout: session.migrationStatementTimeoutMs },
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
