import { evalIdViolation, statusOfProto } from '../../../shared/domain';
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

  /** page_size: 0 means 50; 1-1000 otherwise. */
  pageSize(value: number): number {
    if (value === 0) return DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(value) || value < 1 || value > MAX_PAGE_SIZE) {
      this.fail(
        'page_size',
        'OUT_OF_RANGE',
        `page_size must be from 1 to ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE}), not ${value}`,
      );
      return DEFAULT_PAGE_SIZE;
    }
    return value;
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
  outputKind(value: OutputKind): 'output' | 'error' {
    if (value === OutputKind.OUTPUT_KIND_UNSPECIFIED || value === OutputKind.OUTPUT_KIND_OUTPUT) return 'output';
    if (value === OutputKind.OUTPUT_KIND_ERROR) return 'error';
    this.fail('kind', 'UNKNOWN_VALUE', `kind has an unknown value ${value}; use OUTPUT or ERROR`);
    return 'output';
  }
}

const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 1000;
export const MAX_WATCHED_IDS = 1000;
