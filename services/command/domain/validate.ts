import type { Limits } from '../../../shared/config';
import {
  evalIdViolation,
  hasNul,
  logStreamOfProto,
  logStreamViolation,
  nulViolation,
  severityOfProto,
  violationKindOfProto,
  type ContainerLimits,
  type LogStream,
} from '../../../shared/domain';
import { ValidationError, type FieldViolation } from '../../../shared/errors';
import type {
  CancelEvaluationRequest,
  CompleteEvaluationHeader,
  CompleteEvaluationRequest,
  CreateOutputUploadRequest,
  FailEvaluationRequest,
  LogChunk,
  LogsHeader,
  RecordMetricsRequest,
  RecordSecurityEventRequest,
  StartEvaluationRequest,
  SubmitEvaluationRequest,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import {
  FailureReason,
  ViolationType,
  type ContainerLimits as ContainerLimitsMessage,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import type {
  CancelEvaluation,
  CompleteEvaluation,
  FailEvaluation,
  RecordMetrics,
  RecordSecurityEvent,
  ReportedMetricPoint,
  SecurityReport,
  StartEvaluation,
  SubmitEvaluation,
} from './commands';

const MAX_REQUEST_ID = 128;
const MAX_EXECUTOR_ID = 128;
const MAX_CONTAINER_ID = 256;
const MAX_CANCEL_REASON = 1024;
const MAX_METRIC_UNIT = 32;
const MAX_IMAGE = 512;
const MAX_NETWORK_POLICY = 64;
const MAX_ACTION_TAKEN = 64;
/** A violation's details are a note about one event, not a payload. */
const MAX_DETAILS_BYTES = 16 * 1024;
/**
 * The characters Prometheus and MLflow metric names share, and "/" for grouping
 * ("eval/accuracy"): a name passes to either without escaping.
 */
const METRIC_NAME = /^[A-Za-z][A-Za-z0-9_.:/-]{0,127}$/;
const PRINTABLE = /^[\x21-\x7e]+$/;

/**
 * How deep metadata may nest, counting objects and lists (`{"a": 1}` is 1, `{"a": [1]}` is 2).
 * Protobuf decoders stop at 100 nested messages (ts-proto counts the outermost one too; C++,
 * Java and Python upb count below it), and every level of metadata costs up to three: an
 * object is a Struct, a map entry and a Value, a list a ListValue and a Value. The deepest
 * message that carries metadata, a WatchEvaluation(s)Response (→ EvaluationUpdate → Evaluation
 * → Struct …), then nests 3 × depth + 3 levels: 51 at this limit, half of what a client takes,
 * so that an envelope around it (a proxy's, a future field) still decodes. 33 levels, which
 * the request decoder itself lets through, made updates no client could read.
 */
export const MAX_METADATA_DEPTH = 16;

/**
 * Largest metadata as protobuf, the form every read carries. A client receives at most 4 MiB
 * per message unless it raises the limit (grpc-js, C++, Java, Go and Python alike); the rest of
 * an Evaluation is well under 200 KiB (previews, ids, reasons), so an evaluation with this much
 * metadata still fits any single response. Protobuf can be 5.5 times the JSON (a number in a
 * list is 2 bytes of JSON, 11 of protobuf): this binds only when MAX_METADATA_BYTES is raised
 * above about 190 KiB.
 */
export const MAX_METADATA_WIRE_BYTES = 1024 * 1024;

/**
 * Levels of objects and lists in `value`, counted no further than `limit + 1`. A loop with its
 * own stack, not a recursion: metadata 100,000 levels deep must be refused, not overflow the
 * stack (JSON.stringify and the other checks recurse, so they run only once this one passed).
 */
function nestingDepth(value: unknown, limit: number): number {
  let deepest = 0;
  const pending: [value: unknown, depth: number][] = [[value, 1]];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [item, depth] = next;
    if (item === null || typeof item !== 'object') continue;
    if (depth > deepest) deepest = depth;
    if (deepest > limit) return deepest;
    for (const child of Array.isArray(item) ? item : Object.values(item)) {
      if (child !== null && typeof child === 'object') pending.push([child, depth + 1]);
    }
  }
  return deepest;
}

function varintBytes(value: number): number {
  let bytes = 1;
  for (let rest = value; rest >= 128; rest = Math.floor(rest / 128)) bytes += 1;
  return bytes;
}

/** A length-delimited field holding `length` bytes: its tag, its length and the bytes. */
const delimited = (length: number): number => 1 + varintBytes(length) + length;

/**
 * Bytes of `google.protobuf.Struct` for `object` as ts-proto encodes it: own keys but
 * `__proto__` (Struct.wrap's assignment makes that one no field) whose value is not undefined;
 * an empty key is left out of its entry, as proto3 leaves out defaults. Recursive: it runs only
 * on metadata within MAX_METADATA_DEPTH. A test holds it equal to
 * `Struct.encode(Struct.wrap(object))`, which costs several times as much.
 */
function structBytes(object: object): number {
  let bytes = 0;
  for (const [key, value] of Object.entries(object)) {
    if (value === undefined || key === '__proto__') continue;
    const keyBytes = key === '' ? 0 : delimited(Buffer.byteLength(key, 'utf8'));
    bytes += delimited(keyBytes + delimited(valueBytes(value)));
  }
  return bytes;
}

/** Bytes of the `google.protobuf.Value` for `value` (a list item decoded from an empty Value is undefined). */
function valueBytes(value: unknown): number {
  if (value === undefined) return 0;
  if (value === null || typeof value === 'boolean') return 2;
  if (typeof value === 'number') return 9;
  if (typeof value === 'string') return delimited(Buffer.byteLength(value, 'utf8'));
  if (Array.isArray(value)) {
    let items = 0;
    for (const item of value) items += delimited(valueBytes(item));
    return delimited(items);
  }
  return delimited(structBytes(value));
}

function metadataHasNul(value: unknown): boolean {
  if (typeof value === 'string') return hasNul(value);
  if (Array.isArray(value)) return value.some(metadataHasNul);
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).some(([k, v]) => hasNul(k) || metadataHasNul(v));
  }
  return false;
}

function nulViolationIn(v: Violations, field: string): void {
  const { rule, description } = nulViolation(field);
  v.add(field, rule, description);
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
  else if (hasNul(value)) nulViolationIn(v, field);
}

/**
 * A google.protobuf.Struct's limits, each one a standard client or the read side has (README,
 * "Metadata"): metadata's, and a violation's details.
 */
function checkStruct(v: Violations, field: string, value: object, maxJsonBytes: number): void {
  const depth = nestingDepth(value, MAX_METADATA_DEPTH);
  if (depth > MAX_METADATA_DEPTH) {
    v.add(
      field,
      'TOO_DEEP',
      `${field} must nest at most ${MAX_METADATA_DEPTH} levels of objects and lists, got more than ${MAX_METADATA_DEPTH}`,
    );
    return;
  }
  const jsonBytes = Buffer.byteLength(JSON.stringify(value), 'utf8');
  if (jsonBytes > maxJsonBytes) {
    v.add(field, 'TOO_LARGE', `${field} must be at most ${maxJsonBytes} bytes as JSON, got ${jsonBytes}`);
    return;
  }
  const wireBytes = structBytes(value);
  if (wireBytes > MAX_METADATA_WIRE_BYTES) {
    v.add(
      field,
      'TOO_LARGE',
      `${field} must be at most ${MAX_METADATA_WIRE_BYTES} bytes as protobuf (what every read of the evaluation carries), got ${wireBytes}`,
    );
  } else if (metadataHasNul(value)) nulViolationIn(v, field);
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
  } else if (hasNul(request.code)) nulViolationIn(v, 'code');
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
  checkStruct(v, 'metadata', metadata, limits.maxMetadataBytes);
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
    reason !== FailureReason.FAILURE_REASON_TIMEOUT &&
    reason !== FailureReason.FAILURE_REASON_EXECUTOR_LOST
  ) {
    v.add(
      'reason',
      'UNKNOWN',
      `reason must be FAILURE_REASON_ERROR, FAILURE_REASON_TIMEOUT or FAILURE_REASON_EXECUTOR_LOST, got ${reason}`,
    );
  }
  checkRequestId(v, request.requestId);
  checkExpectedRevision(v, request.expectedRevision);
  v.throwIfAny();
  return {
    type: 'FailEvaluation',
    evalId: request.evalId,
    error: request.error,
    exitCode: request.exitCode,
    reason:
      reason === FailureReason.FAILURE_REASON_TIMEOUT
        ? 'timeout'
        : reason === FailureReason.FAILURE_REASON_EXECUTOR_LOST
          ? 'executor_lost'
          : 'error',
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

/**
 * A RecordMetrics call: at most `maxMetricsPerCall` points, each named by METRIC_NAME, finite,
 * with a short unit and a step of 0 or more. Every point's violations are named by index
 * (`metrics[3].value`). Whether the timestamps are plausible, and whether the evaluation takes
 * more names, is decided against the evaluation (decide.ts).
 */
export function validateRecordMetrics(request: RecordMetricsRequest, limits: Limits): RecordMetrics {
  const v = new Violations();
  checkEvalId(v, request.evalId, limits, true);
  const count = request.metrics.length;
  if (count === 0) v.add('metrics', 'REQUIRED', 'metrics must hold at least one point');
  else if (count > limits.maxMetricsPerCall) {
    v.add('metrics', 'TOO_MANY', `metrics must hold at most ${limits.maxMetricsPerCall} points, got ${count}`);
  }
  const points: ReportedMetricPoint[] = [];
  // An oversized batch is refused whole; its points are not checked one by one.
  if (count <= limits.maxMetricsPerCall) {
    request.metrics.forEach((point, i) => {
      const field = `metrics[${i}]`;
      if (point.name === '') v.add(`${field}.name`, 'REQUIRED', `${field}.name is required`);
      else if (!METRIC_NAME.test(point.name)) {
        v.add(
          `${field}.name`,
          'PATTERN',
          `${field}.name must be 1-128 characters of [A-Za-z0-9_.:/-] starting with a letter, got ${JSON.stringify(point.name.slice(0, 140))}`,
        );
      }
      if (!Number.isFinite(point.value)) {
        v.add(`${field}.value`, 'FINITE', `${field}.value must be a finite number, got ${point.value}`);
      }
      checkText(v, `${field}.unit`, point.unit, MAX_METRIC_UNIT, false);
      if (point.step !== undefined && BigInt(point.step) < 0n) {
        v.add(`${field}.step`, 'NOT_NEGATIVE', `${field}.step must be 0 or more, got ${point.step}`);
      }
      const time = point.timestamp?.getTime();
      if (time !== undefined && !Number.isFinite(time)) {
        v.add(`${field}.timestamp`, 'INVALID', `${field}.timestamp is not a valid time`);
      }
      points.push({
        name: point.name,
        value: point.value,
        unit: point.unit,
        ...(point.step !== undefined ? { step: BigInt(point.step).toString() } : {}),
        ...(time !== undefined && Number.isFinite(time) ? { timestamp: new Date(time).toISOString() } : {}),
      });
    });
  }
  checkRequestId(v, request.requestId);
  checkExpectedRevision(v, request.expectedRevision);
  v.throwIfAny();
  return {
    type: 'RecordMetrics',
    evalId: request.evalId,
    points,
    ...options(request.requestId, request.expectedRevision),
  };
}

/** A sandbox's limits as the event keeps them: the ones set (0 is "no limit"), none negative. */
function containerLimits(v: Violations, field: string, limits: ContainerLimitsMessage | undefined): ContainerLimits {
  if (limits === undefined) return {};
  const checked: Record<string, number | string> = {};
  const count = (name: string, key: keyof ContainerLimits, value: number | string): void => {
    const n = typeof value === 'number' ? value : Number(BigInt(value));
    if (!Number.isFinite(n) || n < 0)
      v.add(`${field}.${name}`, 'NOT_NEGATIVE', `${field}.${name} must be 0 (no limit) or more, got ${value}`);
    else if (n > 0) checked[key] = value;
  };
  count('cpu_cores', 'cpuCores', limits.cpuCores);
  count('memory_bytes', 'memoryBytes', limits.memoryBytes);
  count('pids', 'pids', limits.pids);
  count('disk_bytes', 'diskBytes', limits.diskBytes);
  count('timeout_seconds', 'timeoutSeconds', limits.timeoutSeconds);
  checkText(v, `${field}.network`, limits.network, MAX_NETWORK_POLICY, false);
  if (limits.network !== '') checked.network = limits.network;
  return checked;
}

/**
 * A RecordSecurityEvent call: exactly one report, naming its evaluation and container; a
 * violation of a known type, with details within metadata's limits (and 16 KiB of JSON).
 * Fields are named as in the request (`resource_violation.details`).
 */
export function validateRecordSecurityEvent(request: RecordSecurityEventRequest, limits: Limits): RecordSecurityEvent {
  const v = new Violations();
  const { containerCreated: created, resourceViolation: violation } = request;
  let report: SecurityReport | undefined;
  let evalId = '';
  if (created !== undefined) {
    evalId = created.evalId;
    const field = 'container_created';
    if (created.evalId === '') v.add(`${field}.eval_id`, 'REQUIRED', `${field}.eval_id is required`);
    else checkEvalId(v, created.evalId, limits, true);
    checkText(v, `${field}.container_id`, created.containerId, MAX_CONTAINER_ID, true);
    checkText(v, `${field}.image`, created.image, MAX_IMAGE, true);
    report = {
      kind: 'container_created',
      containerId: created.containerId,
      image: created.image,
      limits: containerLimits(v, `${field}.limits`, created.limits),
    };
  } else if (violation !== undefined) {
    evalId = violation.evalId;
    const field = 'resource_violation';
    if (violation.evalId === '') v.add(`${field}.eval_id`, 'REQUIRED', `${field}.eval_id is required`);
    else checkEvalId(v, violation.evalId, limits, true);
    checkText(v, `${field}.container_id`, violation.containerId, MAX_CONTAINER_ID, true);
    const kind = violationKindOfProto(violation.violationType);
    if (kind === undefined) {
      v.add(
        `${field}.violation_type`,
        violation.violationType === ViolationType.VIOLATION_TYPE_UNSPECIFIED ? 'REQUIRED' : 'UNKNOWN',
        `${field}.violation_type must be one of MEMORY, CPU, PIDS, DISK, NETWORK, SYSCALL, TIMEOUT, OTHER, got ${violation.violationType}`,
      );
    }
    const severity = severityOfProto(violation.severity);
    if (severity === undefined) {
      v.add(`${field}.severity`, 'UNKNOWN', `${field}.severity has an unknown value ${violation.severity}`);
    }
    checkText(v, `${field}.action_taken`, violation.actionTaken, MAX_ACTION_TAKEN, false);
    const details = violation.details ?? {};
    checkStruct(v, `${field}.details`, details, MAX_DETAILS_BYTES);
    report = {
      kind: 'resource_violation',
      containerId: violation.containerId,
      violationType: kind ?? 'other',
      severity: severity ?? 'medium',
      actionTaken: violation.actionTaken,
      details,
    };
  } else {
    v.add('event', 'REQUIRED', 'one of container_created or resource_violation is required');
  }
  const occurredAt = request.occurredAt?.getTime();
  if (occurredAt !== undefined && !Number.isFinite(occurredAt)) {
    v.add('occurred_at', 'INVALID', 'occurred_at is not a valid time');
  }
  checkRequestId(v, request.requestId);
  v.throwIfAny();
  if (report === undefined) throw new Error('unreachable: a report without violations');
  return {
    type: 'RecordSecurityEvent',
    evalId,
    report,
    ...(occurredAt !== undefined ? { occurredAt: new Date(occurredAt).toISOString() } : {}),
    ...options(request.requestId, undefined),
  };
}

/** An AppendLogs call's header, validated: which log it writes. */
export interface LogsTarget {
  readonly evalId: string;
  readonly stream: LogStream;
}

/** Validates an AppendLogs call's first message (fields named `header.<field>`). */
export function validateLogsHeader(header: LogsHeader | undefined, limits: Limits): LogsTarget {
  if (header === undefined) {
    throw new ValidationError([
      {
        field: 'header',
        rule: 'REQUIRED',
        description: 'the first message must be the header (eval_id, stream); chunks follow it',
      },
    ]);
  }
  const v = new Violations('header.');
  checkEvalId(v, header.evalId, limits, true);
  const stream = logStreamOfProto(header.stream);
  const streamViolation = logStreamViolation(header.stream, 'stream');
  if (streamViolation !== undefined) v.add(streamViolation.field, streamViolation.rule, streamViolation.description);
  v.throwIfAny();
  return { evalId: header.evalId, stream: stream ?? 'stdout' };
}

/** A chunk of an AppendLogs call: its offset (0 or more) as a number, and its bytes. */
export function validateLogChunk(chunk: LogChunk, limits: Limits): { offset: number; data: Buffer } {
  const v = new Violations('chunk.');
  const offset = Number(chunk.offset);
  if (!/^\d+$/.test(chunk.offset) || !Number.isSafeInteger(offset)) {
    v.add('offset', 'OUT_OF_RANGE', `offset must be from 0 to ${Number.MAX_SAFE_INTEGER}, not ${chunk.offset}`);
  }
  if (chunk.data.length > limits.maxOutputBytes) {
    v.add('data', 'TOO_LARGE', `data must be at most ${limits.maxOutputBytes} bytes a chunk, got ${chunk.data.length}`);
  }
  v.throwIfAny();
  return { offset, data: Buffer.from(chunk.data.buffer, chunk.data.byteOffset, chunk.data.byteLength) };
}

const SHA256_HEX = /^[0-9a-f]{64}$/i;
const MAX_UPLOAD_ID = 128;
const MAX_ETAG = 256;

/** A CreateOutputUpload request: an evaluation, a size the streamed limit allows, a SHA-256. */
export function validateCreateUpload(
  request: CreateOutputUploadRequest,
  limits: Limits,
): { evalId: string; size: number; sha256: string } {
  const v = new Violations();
  checkEvalId(v, request.evalId, limits, true);
  const size = Number(request.size);
  if (!Number.isSafeInteger(size) || size < 1 || size > limits.maxStreamedOutputBytes) {
    v.add('size', 'OUT_OF_RANGE', `size must be from 1 to ${limits.maxStreamedOutputBytes} bytes, not ${request.size}`);
  }
  if (!SHA256_HEX.test(request.sha256)) v.add('sha256', 'FORMAT', 'sha256 must be 64 hex digits');
  v.throwIfAny();
  return { evalId: request.evalId, size, sha256: request.sha256.toLowerCase() };
}

/** A CompleteEvaluation whose output was uploaded directly: the command but its output, and the upload. */
export interface UploadedCompletion {
  readonly evalId: string;
  readonly exitCode: number;
  readonly options: { readonly requestId?: string; readonly expectedRevision?: string };
  readonly upload: { readonly uploadId: string; readonly parts: { partNumber: number; etag: string }[] };
}

/** Validates a CompleteEvaluation that names an upload (`upload.*` fields): `output` must be empty. */
export function validateCompleteUploaded(request: CompleteEvaluationRequest, limits: Limits): UploadedCompletion {
  const v = new Violations();
  checkEvalId(v, request.evalId, limits, true);
  const upload = request.upload;
  if (request.output.length > 0) {
    v.add('output', 'MUST_BE_EMPTY', 'output must be empty when upload names a direct upload');
  }
  if (upload === undefined || upload.uploadId === '' || upload.uploadId.length > MAX_UPLOAD_ID) {
    v.add(
      'upload.upload_id',
      'REQUIRED',
      `upload.upload_id is the id CreateOutputUpload returned (1-${MAX_UPLOAD_ID} characters)`,
    );
  }
  if (upload !== undefined && upload.parts.length === 0) {
    v.add('upload.parts', 'REQUIRED', 'upload.parts lists every part with its ETag');
  }
  upload?.parts.forEach((part, i) => {
    if (part.partNumber < 1) v.add(`upload.parts[${i}].part_number`, 'OUT_OF_RANGE', 'part_number starts at 1');
    if (part.etag === '' || part.etag.length > MAX_ETAG) {
      v.add(
        `upload.parts[${i}].etag`,
        'REQUIRED',
        `etag is the ETag the part's PUT answered (1-${MAX_ETAG} characters)`,
      );
    }
  });
  checkRequestId(v, request.requestId);
  checkExpectedRevision(v, request.expectedRevision);
  v.throwIfAny();
  return {
    evalId: request.evalId,
    exitCode: request.exitCode,
    options: options(request.requestId, request.expectedRevision),
    upload: {
      uploadId: upload?.uploadId ?? '',
      parts: (upload?.parts ?? []).map((p) => ({ partNumber: p.partNumber, etag: p.etag })),
    },
  };
}
