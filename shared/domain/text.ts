import type { FieldViolation } from '../errors';

/**
 * PostgreSQL text and jsonb cannot hold U+0000, although protobuf strings can: a string that
 * reaches PostgreSQL (stored, or a query's parameter) must be refused with it, or the query
 * fails as the server's error.
 */
export function hasNul(value: string): boolean {
  return value.includes('\u0000');
}

export function nulViolation(field: string): FieldViolation {
  return { field, rule: 'INVALID_CHARACTER', description: `${field} must not contain the character U+0000` };
}
