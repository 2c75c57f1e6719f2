import { Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import {
  AlreadyExistsError,
  CrucibleError,
  DeadlineError,
  FailedPreconditionError,
  IllegalTransitionError,
  NotFoundError,
  OutOfRangeError,
  PermissionDeniedError,
  ResourceExhaustedError,
  RevisionConflictError,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
} from '../errors';
import { Any } from '../generated/google/protobuf/any';
import { BadRequest, ErrorInfo, PreconditionFailure, RetryInfo } from '../generated/google/rpc/error_details';
import { Status as RpcStatus } from '../generated/google/rpc/status';
import type { CallLog } from './call-log';

const ERROR_DOMAIN = 'storage.crucible.dev';

export type StatusObject = Pick<ServiceError, 'code' | 'details' | 'metadata'>;

function detail(typeName: string, bytes: Uint8Array): Any {
  return { typeUrl: `type.googleapis.com/${typeName}`, value: Buffer.from(bytes) };
}

/**
 * The status travels in the call's trailers, and a client drops a call whose trailers pass its
 * metadata limit (grpc-js: 8 KiB by default) without ever learning its status. A request can
 * break thousands of rules at once (35,000 unknown enum values in a repeated field): what is said
 * of it is cut to fit, the first violations kept.
 */
const MAX_MESSAGE_CHARS = 1024;
const MAX_FIELD_VIOLATIONS = 20;
const MAX_DESCRIPTION_CHARS = 200;

function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function withDetails(code: Status, fullMessage: string, details: Any[]): StatusObject {
  const message = cut(fullMessage, MAX_MESSAGE_CHARS);
  const metadata = new Metadata();
  if (details.length > 0) {
    metadata.set('grpc-status-details-bin', Buffer.from(RpcStatus.encode({ code, message, details }).finish()));
  }
  return { code, details: message, metadata };
}

function reason(reasonCode: string, metadata: Record<string, string> = {}): Any {
  return detail(
    'google.rpc.ErrorInfo',
    ErrorInfo.encode({ reason: reasonCode, domain: ERROR_DOMAIN, metadata }).finish(),
  );
}

function retryInfo(afterMs: number): Any {
  const ms = Math.max(1, Math.ceil(afterMs));
  const retryDelay = { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
  return detail('google.rpc.RetryInfo', RetryInfo.encode({ retryDelay }).finish());
}

function badRequest(violations: readonly { field: string; rule: string; description: string }[]): Any {
  const kept = violations.slice(0, MAX_FIELD_VIOLATIONS).map((v) => ({
    field: cut(v.field, MAX_DESCRIPTION_CHARS),
    description: cut(v.description, MAX_DESCRIPTION_CHARS),
    reason: v.rule,
  }));
  const more = violations.length - kept.length;
  if (more > 0) {
    kept.push({ field: '', reason: 'MORE_VIOLATIONS', description: `and ${more} more violations of the same request` });
  }
  const encoded = BadRequest.encode({ fieldViolations: kept }).finish();
  return detail('google.rpc.BadRequest', encoded);
}

/**
 * INVALID_ARGUMENT for a call refused before any handler ran (grpc/malformed.ts): one field
 * violation with the field "" (the request itself, as protovalidate names a message-level
 * rule) and `rule`; the message is `description` alone.
 */
export function invalidRequestStatus(rule: string, description: string): StatusObject {
  return withDetails(Status.INVALID_ARGUMENT, description, [badRequest([{ field: '', rule, description }])]);
}

/**
 * Maps any thrown value to the gRPC status the caller sees. Our typed errors carry a message
 * meant for the caller plus google.rpc details; anything else is a bug, logged with its stack,
 * and the caller gets a generic INTERNAL.
 */
export function toStatus(err: unknown, log: CallLog, method: string): StatusObject {
  const { logger } = log;
  if (err instanceof ValidationError) {
    return withDetails(Status.INVALID_ARGUMENT, err.message, [badRequest(err.violations)]);
  }
  if (err instanceof IllegalTransitionError) {
    const failure = PreconditionFailure.encode({
      violations: [{ type: 'STATUS', subject: `evaluations/${err.evalId}`, description: err.message }],
    }).finish();
    return withDetails(Status.FAILED_PRECONDITION, err.message, [
      detail('google.rpc.PreconditionFailure', failure),
      reason('ILLEGAL_TRANSITION', { from: err.from, to: err.to }),
    ]);
  }
  if (err instanceof FailedPreconditionError) {
    const failure = PreconditionFailure.encode({
      violations: [{ type: err.reason, subject: `evaluations/${err.evalId}`, description: err.message }],
    }).finish();
    return withDetails(Status.FAILED_PRECONDITION, err.message, [
      detail('google.rpc.PreconditionFailure', failure),
      reason(err.reason, {}),
    ]);
  }
  if (err instanceof RevisionConflictError) {
    return withDetails(Status.ABORTED, err.message, [
      reason('REVISION_CONFLICT', { expected_revision: err.expected, current_revision: err.current }),
    ]);
  }
  if (err instanceof NotFoundError) return withDetails(Status.NOT_FOUND, err.message, []);
  if (err instanceof AlreadyExistsError) return withDetails(Status.ALREADY_EXISTS, err.message, []);
  if (err instanceof OutOfRangeError) return withDetails(Status.OUT_OF_RANGE, err.message, []);
  if (err instanceof DeadlineError) return withDetails(Status.DEADLINE_EXCEEDED, err.message, []);
  if (err instanceof ResourceExhaustedError) {
    return withDetails(
      Status.RESOURCE_EXHAUSTED,
      err.message,
      err.retryAfterMs === undefined ? [] : [retryInfo(err.retryAfterMs)],
    );
  }
  if (err instanceof UnauthenticatedError) return withDetails(Status.UNAUTHENTICATED, err.message, []);
  if (err instanceof PermissionDeniedError) return withDetails(Status.PERMISSION_DENIED, err.message, []);
  if (err instanceof UnavailableError) {
    log.refused(method, err);
    return withDetails(
      Status.UNAVAILABLE,
      err.message,
      err.retryAfterMs === undefined ? [] : [retryInfo(err.retryAfterMs)],
    );
  }
  if (err instanceof CrucibleError) {
    logger.error('unmapped domain error', { method, err });
  } else {
    logger.error('unexpected error', { method, err });
  }
  return withDetails(Status.INTERNAL, 'internal error; the server log has the details', []);
}
