import type { FieldViolation } from '../errors';
import { hasNul, nulViolation } from './text';

/**
 * The one rule for an `eval_id`, which both services apply: the command side to the ids it
 * accepts, the query side to the ids it is asked for (an id the command side could never
 * have accepted is INVALID_ARGUMENT there, not NOT_FOUND).
 *
 * An id is a primary key in PostgreSQL and part of several Redis keys, so its length is
 * bounded whatever EVAL_ID_PATTERN allows.
 */
export const EVAL_ID_MAX_LENGTH = 128;

/** The default EVAL_ID_PATTERN: ULIDs and the usual client-chosen ids. */
export const DEFAULT_EVAL_ID_PATTERN = `^[A-Za-z0-9][A-Za-z0-9._-]{0,${EVAL_ID_MAX_LENGTH - 1}}$`;

/**
 * What is wrong with `value` as an eval id in `field`, if anything: REQUIRED, TOO_LONG,
 * INVALID_CHARACTER (U+0000: no stored id holds it), or (given the configured pattern: the
 * command side) PATTERN.
 */
export function evalIdViolation(value: string, field: string, pattern?: RegExp): FieldViolation | undefined {
  if (value === '') return { field, rule: 'REQUIRED', description: `${field} is required` };
  if (value.length > EVAL_ID_MAX_LENGTH) {
    return {
      field,
      rule: 'TOO_LONG',
      description: `${field} must be at most ${EVAL_ID_MAX_LENGTH} characters, got ${value.length}`,
    };
  }
  if (hasNul(value)) return nulViolation(field);
  if (pattern !== undefined && !pattern.test(value)) {
    return { field, rule: 'PATTERN', description: `${field} must match ${pattern.source}` };
  }
  return undefined;
}
