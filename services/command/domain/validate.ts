import type { Limits } from '../../../shared/config';
import { evalIdViolation } from '../../../shared/domain';
import { ValidationError, type FieldViolation } from '../../../shared/errors';
import type {
  CancelEvaluationRequest,
  CompleteEvaluationHeader,
  CompleteEvaluationRequest,
  FailEvaluationRequest,
  StartEvaluationRequest,
  SubmitEvaluationRequest,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import { FailureReason } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type {
  CancelEvaluation,
  CompleteEvaluation,
  FailEvaluation,
  StartEvaluation,
  SubmitEvaluation,
} from './commands';

const MAX_REQUEST_ID = 128;
const MAX_EXECUTOR_ID = 128;
const MAX_CONTAINER_ID = 256;
const MAX_CANCEL_REASON = 1024;
const PRINTABLE = /^[\x21-\x7e]+$/;

/** PostgreSQL text and jsonb cannot hold U+0000, although protobuf strings can. */
function hasNul(value: string): boolean {
  return value.includes('\u0000');
}

function metadataHasNul(value: unknown): boolean {
  if (typeof value === 'string') return hasNul(value);
  if (Array.isArray(value)) return value.some(metadataHasNul);
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).some(([k, v]) => hasNul(k) || metadataHasNul(v));
  }
  return false;
}

function nulViolation(v: Violations, field: string): void {
  v.add(field, 'INVALID_CHARACTER', `${field} must not contain the character U+0000`);
}

/** Collects every violation of a request, so the caller learns all of them at once. */
class Violations {
  private readonly list: FieldViolation[] = [];

  /** `prefix` names the message the fields are in (e.g. "header." for a stream's first message). */
  constructor(private readonly prefix = '') {}

  add(field: string, rule: string, description: string): void {
    this.list.push({ field: this.prefix + field, rule, description });
  }

  throwIfAny(): void {
    if (this.list.length > 0) throw new ValidationError(this.list);
  }
}

function checkEvalId(v: Violations, evalId: string, limits: Limits, required: boolean): void {
  if (evalId === '' && !required) return;
  const violation = evalIdViolation(evalId, 'eval_id', limits.evalIdPattern);
  if (violation !== undefined) v.add(violation.field, violation.rule, violation.description);
}

function checkRequestId(v: Violations, requestId: string): void {
  if (requestId === '') return;
  if (requestId.length > MAX_REQUEST_ID) {
    v.add('request_id', 'TOO_LONG', `request_id must be at most ${MAX_REQUEST_ID} characters, got ${requestId.length}`);
  } else if (!PRINTABLE.test(requestId)) {
    v.add('request_id', 'PATTERN', 'request_id must be printable ASCII without spaces');
  }
}

function checkExpectedRevision(v: Violations, expected: string | undefined): void {
  if (expected !== undefined && BigInt(expected) < 0n) {
    v.add('expected_revision', 'NOT_NEGATIVE', `expected_revision must be 0 or more, got ${expected}`);
  }
}

function checkText(v: Violations, field: string, value: string, max: number, required: boolean): void {
  if (value === '') {
    if (required) v.add(field, 'REQUIRED', `${field} is required`);
    return;
  }
  if (value.length > max) v.add(field, 'TOO_LONG', `${field} must be at most ${max} characters, got ${value.length}`);
  else if (hasNul(value)) nulViolation(v, field);
}

function options(
  requestId: string,
  expectedRevision: string | undefined,
): { requestId?: string; expectedRevision?: string } {
  return {
    ...(requestId !== '' ? { requestId } : {}),
    ...(expectedRevision !== undefined ? { expectedRevision: BigInt(expectedRevision).toString() } : {}),
  };
}

export function validateSubmit(request: SubmitEvaluationRequest, limits: Limits): SubmitEvaluation {
  const v = new Violations();
  checkEvalId(v, request.evalId, limits, false);
  const codeBytes = Buffer.byteLength(request.code, 'utf8');
  if (request.code.trim() === '') v.add('code', 'REQUIRED', 'code is required and must not be blank');
  else if (codeBytes > limits.maxCodeBytes) {
    v.add('code', 'TOO_LARGE', `code must be at most ${limits.maxCodeBytes} bytes, got ${codeBytes}`);
  } else if (hasNul(request.code)) nulViolation(v, 'code');
  if (request.language === '') v.add('language', 'REQUIRED', 'language is required');
  else if (!limits.languages.includes(request.language)) {
    v.add('language', 'UNKNOWN', `language must be one of ${limits.languages.join(', ')}`);
  }
  if (request.engine === '') v.add('engine', 'REQUIRED', 'engine is required');
  else if (!limits.engines.includes(request.engine)) {
    v.add('engine', 'UNKNOWN', `engine must be one of ${limits.engines.join(', ')}`);
  }
  if (request.timeoutSeconds < 1 || request.timeoutSeconds > limits.maxTimeoutSeconds) {
    v.add(
      'timeout_seconds',
      'OUT_OF_RANGE',
      `timeout_seconds must be from 1 to ${limits.maxTimeoutSeconds}, got ${request.timeoutSeconds}`,
    );
  }
  const metadata = request.metadata ?? {};
  const metadataBytes = Buffer.byteLength(JSON.stringify(metadata), 'utf8');
  if (metadataBytes > limits.maxMetadataBytes) {
    v.add(
      'metadata',
      'TOO_LARGE',
      `metadata must be at most ${limits.maxMetadataBytes} bytes as JSON, got ${metadataBytes}`,
    );
  } else if (metadataHasNul(metadata)) nulViolation(v, 'metadata');
  checkRequestId(v, request.requestId);
  checkExpectedRevision(v, request.expectedRevision);
  v.throwIfAny();
  return {
    type: 'SubmitEvaluation',
    ...(request.evalId !== '' ? { evalId: request.evalId } : {}),
    code: request.code,
    language: request.language,
    engine: request.engine,
    timeoutSeconds: request.timeoutSeconds,
    metadata,
    ...options(request.requestId, request.expectedRevision),
  };
}

export function validateStart(request: StartEvaluationRequest, limits: Limits): StartEvaluation {
  const v = new Violations();
  checkEvalId(v, request.evalId, limits, true);
  checkText(v, 'executor_id', request.executorId, MAX_EXECUTOR_ID, true);
  checkText(v, 'container_id', request.containerId, MAX_CONTAINER_ID, false);
  checkRequestId(v, request.requestId);
  checkExpectedRevision(v, request.expectedRevision);
  v.throwIfAny();
  return {
    type: 'StartEvaluation',
    evalId: request.evalId,
    executorId: request.executorId,
    containerId: request.containerId,
    ...options(request.requestId, request.expectedRevision),
  };
}

export function validateComplete(
  request: CompleteEvaluationRequest,
  limits: Limits,
): CompleteEvaluation & { readonly output: Buffer } {
  const v = new Violations();
  checkEvalId(v, request.evalId, limits, true);
  if (request.output.length > limits.maxOutputBytes) {
    v.add('output', 'TOO_LARGE', `output must be at most ${limits.maxOutputBytes} bytes, got ${request.output.length}`);
  }
  checkRequestId(v, request.requestId);
  checkExpectedRevision(v, request.expectedRevision);
  v.throwIfAny();
  return {
    type: 'CompleteEvaluation',
    evalId: request.evalId,
    output: Buffer.from(request.output.buffer, request.output.byteOffset, request.output.byteLength),
    exitCode: request.exitCode,
    ...options(request.requestId, request.expectedRevision),
  };
}

/** CompleteEvaluationStream's header, validated: the command but its output, and the output's size. */
export interface CompletionHeader {
  readonly evalId: string;
  readonly exitCode: number;
  readonly outputSize: number;
  readonly options: { readonly requestId?: string; readonly expectedRevision?: string };
}

/** Validates a streamed completion's first message (fields named `header.<field>`). */
export function validateCompleteHeader(header: CompleteEvaluationHeader | undefined, limits: Limits): CompletionHeader {
  if (header === undefined) {
    throw new ValidationError([
      {
        field: 'header',
        rule: 'REQUIRED',
        description: 'the first message must be the header (eval_id, exit_code, output_size); output chunks follow it',
      },
    ]);
  }
  const v = new Violations('header.');
  checkEvalId(v, header.evalId, limits, true);
  const size = BigInt(header.outputSize);
  if (size < 0n) v.add('output_size', 'NOT_NEGATIVE', `output_size must be 0 or more, got ${size}`);
  else if (size > BigInt(limits.maxStreamedOutputBytes)) {
    v.add(
      'output_size',
      'TOO_LARGE',
      `output_size must be at most ${limits.maxStreamedOutputBytes} bytes, got ${size}`,
    );
  }
  checkRequestId(v, header.requestId);
  checkExpectedRevision(v, header.expectedRevision);
  v.throwIfAny();
  return {
    evalId: header.evalId,
    exitCode: header.exitCode,
    outputSize: Number(size),
    options: options(header.requestId, header.expectedRevision),
  };
}

export function validateFail(request: FailEvaluationRequest, limits: Limits): FailEvaluation {
  const v = new Violations();
  checkEvalId(v, request.evalId, limits, true);
  const errorBytes = Buffer.byteLength(request.error, 'utf8');
  if (errorBytes > limits.maxOutputBytes) {
    v.add('error', 'TOO_LARGE', `error must be at most ${limits.maxOutputBytes} bytes, got ${errorBytes}`);
  }
  const reason = request.reason as number;
  if (
    reason !== FailureReason.FAILURE_REASON_UNSPECIFIED &&
    reason !== FailureReason.FAILURE_REASON_ERROR &&
    reason !== FailureReason.FAILURE_REASON_TIMEOUT
  ) {
    v.add('reason', 'UNKNOWN', `reason must be FAILURE_REASON_ERROR or FAILURE_REASON_TIMEOUT, got ${reason}`);
  }
  checkRequestId(v, request.requestId);
  checkExpectedRevision(v, request.expectedRevision);
  v.throwIfAny();
  return {
    type: 'FailEvaluation',
    evalId: request.evalId,
    error: request.error,
    exitCode: request.exitCode,
    reason: reason === FailureReason.FAILURE_REASON_TIMEOUT ? 'timeout' : 'error',
    ...options(request.requestId, request.expectedRevision),
  };
}

export function validateCancel(request: CancelEvaluationRequest, limits: Limits): CancelEvaluation {
  const v = new Violations();
  checkEvalId(v, request.evalId, limits, true);
  checkText(v, 'reason', request.reason, MAX_CANCEL_REASON, false);
  checkRequestId(v, request.requestId);
  checkExpectedRevision(v, request.expectedRevision);
  v.throwIfAny();
  return {
    type: 'CancelEvaluation',
    evalId: request.evalId,
    reason: request.reason,
    ...options(request.requestId, request.expectedRevision),
  };
}
