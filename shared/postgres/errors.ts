/**
 * Classifies errors thrown by `pg`: which mean "PostgreSQL cannot be reached or is shutting
 * down" (retryable: the caller gets UNAVAILABLE) as opposed to bugs or constraint violations.
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

// SQLSTATE classes 08 (connection exception), 53 (insufficient resources), 57P0x (shutdown /
// crash recovery / cannot connect now).
const UNAVAILABLE_SQLSTATES = /^(08|53|57P0[1-4])/;

export function isPostgresUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (CONNECTION_ERROR_CODES.has(code) || UNAVAILABLE_SQLSTATES.test(code))) return true;
  const message = err.message;
  return (
    message.includes('Connection terminated') ||
    message.includes('timeout exceeded when trying to connect') ||
    message.includes('Client has encountered a connection error') ||
    message.includes('connect ECONNREFUSED')
  );
}

/** SQLSTATE of a unique_violation, with the constraint name when pg reports it. */
export function uniqueViolation(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const { code, constraint } = err as { code?: unknown; constraint?: unknown };
  if (code !== '23505') return undefined;
  return typeof constraint === 'string' ? constraint : '';
}
