import { evalIdViolation, hasNul, nulViolation, statusOfProto, type BodyKind } from '../../../shared/domain';
import { ValidationError, type FieldViolation } from '../../../shared/errors';
import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { OutputKind } from '../../../shared/generated/crucible/storage/v1/query_service';

/**
 * Request validation for the query RPCs: pure, and collecting every violation so that a
 * caller can fix a request in one pass.
 */
export class RequestChecks {
  private readonly violations: FieldViolation[] = [];

  /** Throws ValidationError (INVALID_ARGUMENT) when any check failed. */
  done(): void {
    if (this.violations.length > 0) throw new ValidationError(this.violations);
  }

  fail(field: string, rule: string, description: string): void {
    this.violations.push({ field, rule, description });
  }

  /** Refuses U+0000 in a string PostgreSQL is asked about: it can hold none (INVALID_CHARACTER). */
  noNul(value: string, field: string): void {
    if (hasNul(value)) this.violations.push(nulViolation(field));
  }

  /** The shared rule, less the configurable pattern: ids accepted under an earlier one stay readable. */
  evalId(value: string, field = 'eval_id'): string {
    const violation = evalIdViolation(value, field);
    if (violation !== undefined) this.violations.push(violation);
    return value;
  }

  /** An optional non-negative int64 (decimal string) such as min_position or after_revision. */
  position(value: string | undefined, field: string): bigint | undefined {
    if (value === undefined) return undefined;
    if (!/^\d+$/.test(value)) {
      this.fail(field, 'OUT_OF_RANGE', `${field} must be zero or more, not ${value}`);
      return undefined;
    }
    return BigInt(value);
  }

  /** page_size: 0 means the RPC's default (ListEvaluations: 50); 1 to its maximum (1000) otherwise. */
  pageSize(value: number, sizes: PageSizes = LIST_PAGE_SIZES): number {
    const { byDefault, max } = sizes;
    if (value === 0) return byDefault;
    if (!Number.isInteger(value) || value < 1 || value > max) {
      this.fail('page_size', 'OUT_OF_RANGE', `page_size must be from 1 to ${max} (0 means ${byDefault}), not ${value}`);
      return byDefault;
    }
    return value;
  }

  /**
   * GetEvaluationEvents' page_token: "" for the first page (undefined), else the last revision
   * the previous page served. A token must be one GetEvaluationEvents issued (INVALID) for the
   * same eval_id and after_revision (MISMATCH): paging on with other fields would skip or
   * repeat events. `afterRevision` undefined (it broke its own rule) skips the comparison,
   * which would only add a violation the caller did not cause.
   */
  eventPageToken(token: string, evalId: string, afterRevision: bigint | undefined): bigint | undefined {
    if (token === '') return undefined;
    const cursor = parseEventPageToken(token);
    if (cursor === undefined) {
      this.fail('page_token', 'INVALID', 'page_token must be a next_page_token returned by GetEvaluationEvents');
      return undefined;
    }
    if (cursor.evalId !== evalId || (afterRevision !== undefined && cursor.afterRevision !== afterRevision)) {
      this.fail(
        'page_token',
        'MISMATCH',
        'page_token was issued for another eval_id or after_revision; repeat the first request with the same fields',
      );
      return undefined;
    }
    return cursor.lastRevision;
  }

  /** A status filter; UNSPECIFIED means "any". */
  status(value: EvaluationStatus, field: string): EvaluationStatus {
    if (value !== EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED && statusOfProto(value) === undefined) {
      this.fail(field, 'UNKNOWN_VALUE', `${field} has an unknown status value ${value}`);
      return EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED;
    }
    return value;
  }

  /** UNSPECIFIED reads as OUTPUT. */
  outputKind(value: OutputKind): BodyKind {
    if (value === OutputKind.OUTPUT_KIND_UNSPECIFIED || value === OutputKind.OUTPUT_KIND_OUTPUT) return 'output';
    if (value === OutputKind.OUTPUT_KIND_ERROR) return 'error';
    if (value === OutputKind.OUTPUT_KIND_CODE) return 'code';
    this.fail('kind', 'UNKNOWN_VALUE', `kind has an unknown value ${value}; use OUTPUT, ERROR or CODE`);
    return 'output';
  }

  /** A byte offset or count (int64, decimal string): 0 or more, and within what a number holds exactly. */
  byteCount(value: string, field: string): number {
    const count = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(count)) {
      this.fail(field, 'OUT_OF_RANGE', `${field} must be from 0 to ${Number.MAX_SAFE_INTEGER}, not ${value}`);
      return 0;
    }
    return count;
  }
}

/** How many items a page holds when page_size is 0 (`byDefault`), and at most. */
export interface PageSizes {
  readonly byDefault: number;
  readonly max: number;
}

export const LIST_PAGE_SIZES: PageSizes = { byDefault: 50, max: 1000 };
export const EVENT_PAGE_SIZES: PageSizes = { byDefault: 100, max: 1000 };
export const MAX_WATCHED_IDS = 1000;

/**
 * Where a GetEvaluationEvents page ended (`lastRevision`), and the request it answered: the
 * token carries both, so that a token is refused on a request it was not issued for.
 */
export interface EventPageCursor {
  readonly evalId: string;
  readonly afterRevision: bigint;
  readonly lastRevision: bigint;
}

/** Opaque to clients: base64url of a versioned JSON object (the id verbatim: exact, never a hash collision). */
export function encodeEventPageToken(cursor: EventPageCursor): string {
  const fields = { v: 1, e: cursor.evalId, a: cursor.afterRevision.toString(), r: cursor.lastRevision.toString() };
  return Buffer.from(JSON.stringify(fields), 'utf8').toString('base64url');
}

const DECIMAL = /^(0|[1-9]\d{0,18})$/;

/** The cursor a token holds, or undefined when it is not one encodeEventPageToken wrote. */
function parseEventPageToken(token: string): EventPageCursor | undefined {
  if (!/^[A-Za-z0-9_-]+$/.test(token)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  const { v, e, a, r } = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>;
  if (v !== 1 || typeof e !== 'string' || typeof a !== 'string' || typeof r !== 'string') return undefined;
  if (!DECIMAL.test(a) || !DECIMAL.test(r)) return undefined;
  const cursor = { evalId: e, afterRevision: BigInt(a), lastRevision: BigInt(r) };
  // A page holds revisions above after_revision only: its last one cannot be at or below it.
  return cursor.lastRevision > cursor.afterRevision ? cursor : undefined;
}
