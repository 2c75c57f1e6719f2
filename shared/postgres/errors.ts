/**
 * Classifies errors thrown by `pg`: which mean "PostgreSQL cannot take this work now"
 * (retryable: the caller gets UNAVAILABLE) as opposed to bugs or constraint violations, and
 * which leave a write's outcome unknown.
 */
const CONNECTION_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'EAI_AGAIN',
]);

/** pg's own errors for a connection that failed or could not be had (they carry no code). */
const CONNECTION_ERROR_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error',
  'connect ECONNREFUSED',
];

/** SQLSTATEs (exact, or a class by its first two characters) and what each says happened. */
const UNAVAILABLE_SQLSTATES: readonly (readonly [RegExp, string])[] = [
  [/^08/, 'the connection to PostgreSQL failed'],
  [/^53/, 'PostgreSQL is out of resources (connections, memory or disk)'],
  [
    /^57P0[1-4]$/,
    'PostgreSQL ended or refused the session (shutting down, starting up, recovering, or ended by an administrator)',
  ],
  // A standby (or a session with default_transaction_read_only) refuses every write; after a
  // failover a new connection may reach the new primary.
  [/^25006$/, 'the PostgreSQL session is read-only (a standby, or default_transaction_read_only is on)'],
  [/^55P03$/, 'a lock wait outlasted lock_timeout (another session held the lock)'],
  [/^57014$/, 'the statement outlasted statement_timeout, or was cancelled'],
  // Two writers each waited for a lock the other held (during a rolling upgrade, an older
  // instance takes the locks in another order): PostgreSQL rolled this one back, and the same
  // work again succeeds.
  [/^40P01$/, 'PostgreSQL broke a deadlock by rolling this write back'],
];

function codeOf(err: Error): unknown {
  return (err as { code?: unknown }).code;
}

function isConnectionFailure(err: Error): boolean {
  const code = codeOf(err);
  if (typeof code === 'string' && CONNECTION_ERROR_CODES.has(code)) return true;
  return CONNECTION_ERROR_MESSAGES.some((m) => err.message.includes(m));
}

/**
 * Why PostgreSQL could not do the work, in words for the caller ("the PostgreSQL session is
 * read-only …"), when the error is one a retry may get past; undefined for anything else.
 */
export function postgresUnavailableCause(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = codeOf(err);
  if (typeof code === 'string') {
    for (const [pattern, cause] of UNAVAILABLE_SQLSTATES) if (pattern.test(code)) return cause;
  }
  return isConnectionFailure(err) ? 'PostgreSQL cannot be reached or the connection failed' : undefined;
}

export function isPostgresUnavailable(err: unknown): boolean {
  return postgresUnavailableCause(err) !== undefined;
}

/**
 * Whether a write that was sent may have committed although it failed: the connection failed,
 * or the session ended (severity FATAL or PANIC: a terminated backend, a shutdown, a crash,
 * which may come after the COMMIT took effect). An error of severity ERROR is not: PostgreSQL
 * answered the statement with it and rolled the transaction back.
 */
export function leavesOutcomeUnknown(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const { severity } = err as { severity?: unknown };
  if (severity === 'FATAL' || severity === 'PANIC') return true;
  if (severity === 'ERROR') return false;
  const code = codeOf(err);
  return isConnectionFailure(err) || (typeof code === 'string' && code.startsWith('08'));
}

/** SQLSTATE of a unique_violation, with the constraint name when pg reports it. */
export function uniqueViolation(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const { code, constraint } = err as { code?: unknown; constraint?: unknown };
  if (code !== '23505') return undefined;
  return typeof constraint === 'string' ? constraint : '';
}
