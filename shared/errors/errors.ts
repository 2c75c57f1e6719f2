/**
 * The typed errors every layer throws. Exactly one function (shared/grpc/status.ts) maps them
 * to gRPC status codes; anything else becomes INTERNAL with a generic message.
 */

export interface FieldViolation {
  /** Request field path, snake_case as in the proto, e.g. "metadata" or "eval_id". */
  readonly field: string;
  /** Machine-readable rule, UPPER_SNAKE_CASE, e.g. "REQUIRED", "TOO_LONG". */
  readonly rule: string;
  /** Sentence for a person: what the rule is and how the value broke it. */
  readonly description: string;
}

export abstract class CrucibleError extends Error {
  abstract readonly kind: string;
}

/** A request field breaks a rule. → INVALID_ARGUMENT with google.rpc.BadRequest. */
export class ValidationError extends CrucibleError {
  readonly kind = 'validation';
  constructor(readonly violations: readonly FieldViolation[]) {
    super(violations.map((v) => `${v.field}: ${v.description}`).join('; '));
  }
}

/** → NOT_FOUND */
export class NotFoundError extends CrucibleError {
  readonly kind = 'not_found';
}

/** → ALREADY_EXISTS */
export class AlreadyExistsError extends CrucibleError {
  readonly kind = 'already_exists';
}

/** The status machine forbids the change. → FAILED_PRECONDITION with PreconditionFailure. */
export class IllegalTransitionError extends CrucibleError {
  readonly kind = 'illegal_transition';
  constructor(
    readonly evalId: string,
    readonly from: string,
    readonly to: string,
  ) {
    super(`evaluation ${evalId} is ${from}; it cannot become ${to}`);
  }
}

/**
 * The evaluation is not in a state that takes the command, for a reason other than its status
 * machine (e.g. metrics after its grace period). → FAILED_PRECONDITION with PreconditionFailure
 * and ErrorInfo `reason` (UPPER_SNAKE_CASE, machine-readable).
 */
export class FailedPreconditionError extends CrucibleError {
  readonly kind = 'failed_precondition';
  constructor(
    readonly evalId: string,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** `expected_revision` does not match. → ABORTED; the message names the current revision. */
export class RevisionConflictError extends CrucibleError {
  readonly kind = 'revision_conflict';
  constructor(
    readonly evalId: string,
    readonly expected: string,
    readonly current: string,
  ) {
    super(`evaluation ${evalId} is at revision ${current}, not the expected ${expected}`);
  }
}

/** A dependency (PostgreSQL, Redis, S3) cannot be reached, or the service is not ready. → UNAVAILABLE */
export class UnavailableError extends CrucibleError {
  readonly kind = 'unavailable';
  /** When a retry is worth it, if known (→ google.rpc.RetryInfo). */
  readonly retryAfterMs: number | undefined;
  constructor(message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/**
 * A write was sent and then its connection failed, so it may or may not have committed. →
 * UNAVAILABLE, like any outage, but its message must not say "nothing was written": it says
 * the outcome is unknown and how a retry learns it.
 */
export class CommitOutcomeUnknownError extends UnavailableError {}

/** A stream cannot resume from the requested point. → OUT_OF_RANGE */
export class OutOfRangeError extends CrucibleError {
  readonly kind = 'out_of_range';
}

/**
 * A cap on what callers may hold open (streams, waits) or send (a rate) is reached. →
 * RESOURCE_EXHAUSTED, with google.rpc.RetryInfo when `retryAfterMs` says when it is worth trying again.
 */
export class ResourceExhaustedError extends CrucibleError {
  readonly kind = 'resource_exhausted';
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** The call carries no credential, or one that is malformed, expired or wrongly signed. → UNAUTHENTICATED */
export class UnauthenticatedError extends CrucibleError {
  readonly kind = 'unauthenticated';
}

/** The caller is known but may not do this. → PERMISSION_DENIED */
export class PermissionDeniedError extends CrucibleError {
  readonly kind = 'permission_denied';
}

/** A wait (e.g. for `min_position`) outlived the call's deadline. → DEADLINE_EXCEEDED */
export class DeadlineError extends CrucibleError {
  readonly kind = 'deadline';
}

/** Builds a ValidationError from a list, or returns undefined when it is empty. */
export function validationErrorOf(violations: readonly FieldViolation[]): ValidationError | undefined {
  return violations.length === 0 ? undefined : new ValidationError(violations);
}
