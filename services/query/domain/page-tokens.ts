import { createHash } from 'node:crypto';
import type { RequestChecks } from './requests';

/**
 * Keyset page tokens for reads from PostgreSQL: the cursor (where the page ended, as strings)
 * and a digest of the request it answered (its filter), base64url JSON: opaque to clients, and
 * refused on a request it was not issued for.
 */
export function encodeScopedToken(scope: readonly unknown[], cursor: readonly string[]): string {
  return Buffer.from(JSON.stringify([digestOf(scope), ...cursor]), 'utf8').toString('base64url');
}

/**
 * The cursor a token holds, when it was issued for `scope` and `valid` accepts it; otherwise a
 * violation of `page_token` is added to `checks` (INVALID, or MISMATCH for another request's)
 * and undefined returned.
 */
export function decodeScopedToken(
  token: string,
  scope: readonly unknown[],
  checks: RequestChecks,
  valid: (cursor: readonly string[]) => boolean,
): string[] | undefined {
  let parsed: unknown;
  try {
    parsed = /^[A-Za-z0-9_-]+$/.test(token) ? JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) : undefined;
  } catch {
    parsed = undefined;
  }
  if (Array.isArray(parsed) && parsed.length > 1 && parsed.every((part) => typeof part === 'string')) {
    const [digest, ...cursor] = parsed;
    if (valid(cursor)) {
      if (digest === digestOf(scope)) return cursor;
      checks.fail(
        'page_token',
        'MISMATCH',
        'page_token belongs to another request: its filters must not change between pages',
      );
      return undefined;
    }
  }
  checks.fail('page_token', 'INVALID', 'page_token is not a token this service gave out');
  return undefined;
}

function digestOf(scope: readonly unknown[]): string {
  return createHash('sha256').update(JSON.stringify(scope)).digest('base64url').slice(0, 16);
}
