import { Pool } from 'pg';

export interface PostgresOptions {
  readonly url: string;
  /** Pool size. */
  readonly poolSize?: number;
  /** Open every session read-only (the query side): a bug there can never write. */
  readonly readOnly?: boolean;
  readonly applicationName: string;
}

/**
 * The `pg` pool a service owns (created in its main.ts, closed there). Services query it
 * directly: TypeORM's query runner adds a runner checkout, event broadcasting and result
 * reshaping to every statement, which a one-statement command does not need; TypeORM only runs
 * the migrations (data-source.ts).
 *
 * `onIdleError`: a pooled connection that breaks while idle (the server restarted) is dropped
 * by pg and reported here; without a listener pg's 'error' event would end the process.
 */
export function createPool(options: PostgresOptions, onIdleError: (err: Error) => void = () => undefined): Pool {
  const pool = new Pool({
    connectionString: options.url,
    max: options.poolSize ?? 10,
    application_name: options.applicationName,
    // Fail fast when PostgreSQL is down instead of queueing callers until their deadline.
    connectionTimeoutMillis: 3000,
    ...(options.readOnly === true ? { options: '-c default_transaction_read_only=on' } : {}),
  });
  pool.on('error', onIdleError);
  return pool;
}
