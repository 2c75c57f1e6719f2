import { Pool, type PoolConfig } from 'pg';
import { defaultPostgresSession, type PostgresSessionConfig } from '../config';

export interface PostgresOptions {
  readonly url: string;
  /** Pool size. */
  readonly poolSize?: number;
  /** Open every session read-only (the query side): a bug there can never write. */
  readonly readOnly?: boolean;
  readonly applicationName: string;
  /** Timeouts and keepalive of every session: the services pass `config.postgres`; tools and tests get the defaults. */
  readonly session?: PostgresSessionConfig;
}

/**
 * What each session is opened with, so that no statement, lock wait or open transaction of
 * ours lasts without bound, and a connection whose server vanished is noticed: the timeouts go
 * in the startup message (no round trip of their own), keepalive on the socket.
 */
export function sessionConfig(session: PostgresSessionConfig = defaultPostgresSession()): PoolConfig {
  return {
    statement_timeout: session.statementTimeoutMs,
    lock_timeout: session.lockTimeoutMs,
    idle_in_transaction_session_timeout: session.idleInTransactionTimeoutMs,
    keepAlive: true,
    keepAliveInitialDelayMillis: session.keepAliveDelayMs,
  };
}

/**
 * The `pg` pool a service owns (created in its main.ts, closed there). Services query it
 * directly: TypeORM's query runner adds a runner checkout, event broadcasting and result
 * reshaping to every statement, which a one-statement command does not need; TypeORM only runs
 * the migrations (data-source.ts).
 *
 * Sessions are pipelined: statements sent together on one session (an append's BEGIN, write
 * and COMMIT) go out without waiting for each other's answers, in one round trip. A caller
 * that sends one statement at a time (every `pool.query`) sees no difference.
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
    pipeline: true,
    ...sessionConfig(options.session),
    ...(options.readOnly === true ? { options: '-c default_transaction_read_only=on' } : {}),
  });
  pool.on('error', onIdleError);
  return pool;
}
