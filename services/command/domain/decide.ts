import { createHash } from 'node:crypto';
import {
  canTransition,
  DEFAULT_TENANT,
  isTerminal,
  summarizeBatch,
  type BodyRef,
  type EvaluationEvent,
  type LogStream,
  type MetricPoint,
  type Status,
} from '../../../shared/domain';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  PermissionDeniedError,
  IllegalTransitionError,
  NotFoundError,
  RevisionConflictError,
  ValidationError,
  type FieldViolation,
} from '../../../shared/errors';
import type {
  AppendLogSegment,
  MoveBlob,
  Command,
  CommandResult,
  EvaluationCommand,
  RecordMetrics,
  RecordSecurityEvent,
  SubmitEvaluation,
} from './commands';
import type { Caller } from '../../../shared/auth';

/** The commands that record what happened to an evaluation without moving its status. */
type RecordCommand = RecordMetrics | RecordSecurityEvent | AppendLogSegment | MoveBlob;

/** An event already in the log, as far as deciding needs to know it. */
export interface LoggedCommand {
  readonly evalId: string;
  readonly revision: string;
  readonly position: string;
  readonly commandHash: string;
}

/** The write model's view of one evaluation. */
export interface EvaluationSnapshot {
  readonly evalId: string;
  readonly status: Status;
  readonly revision: string;
  /** The command that wrote revision 1. */
  readonly submitted: LoggedCommand;
  /** The command that wrote the current revision. */
  readonly latest: LoggedCommand;
  readonly createdAt: Date;
  /** When it reached its terminal status; undefined while it has not. */
  readonly endedAt?: Date;
  /** Every metric name recorded for it, sorted. */
  readonly metricNames: readonly string[];
  /** Bytes of each log stored: where the next segment of it must start. */
  readonly logBytes: Readonly<Record<LogStream, number>>;
  /** The executor it is bound to (StartEvaluation's): who alone may report for it from then on. */
  readonly executorId?: string;
  /** When retention archived it: it takes no more events (only repeats of earlier commands are answered). */
  readonly archivedAt?: Date;
}

/** How RecordMetrics is bounded by the evaluation it measures (config: MAX_METRIC_NAMES, …). */
export interface MetricRules {
  readonly maxMetricNames: number;
  /** RecordMetrics is accepted this long after the evaluation ended. */
  readonly metricsAfterTerminalMs: number;
}

/** How long an evaluation's logs take segments (config: LOGS_AFTER_TERMINAL_SECONDS). */
export interface LogRules {
  /** Segments are accepted this long after the evaluation ended. */
  readonly logsAfterTerminalMs: number;
}

/** How far a reported time may be from the evaluation's life: a clock that is off, not a wrong year. */
const CLOCK_SLACK_MS = 24 * 3600 * 1000;

export interface DecisionContext {
  readonly now: Date;
  /** Hash of the command's content (see commandHash). */
  readonly commandHash: string;
  /** Where the command's body (output or error) is kept; required for Complete and Fail. */
  readonly body?: BodyRef;
  /** Required for RecordMetrics. */
  readonly metricRules?: MetricRules;
  /** Required for AppendLogSegment. */
  readonly logRules?: LogRules;
  /** Who sends the command; undefined for the service's own (the reaper's, the blob mover's). */
  readonly caller?: Caller;
  /** The tenant a submit's evaluation belongs to (its caller's). */
  readonly tenant?: string;
}

export type Decision =
  /** The command was already applied: answer as the first time, write nothing. */
  | { readonly kind: 'unchanged'; readonly result: CommandResult }
  | {
      readonly kind: 'append';
      readonly evalId: string;
      readonly event: EvaluationEvent;
      /** The revision the write must find (0: the evaluation must not exist). */
      readonly fromRevision: string;
      readonly toRevision: string;
      readonly status: Status;
      /** RecordMetrics: the points to store, and the evaluation's metric names with theirs. */
      readonly metrics?: { readonly points: readonly MetricPoint[]; readonly names: readonly string[] };
      /** AppendLogSegment: the segment's place; its bytes are the command's body. */
      readonly log?: { readonly stream: LogStream; readonly offset: number; readonly length: number };
    };

const TARGET_STATUS: Readonly<Record<Exclude<EvaluationCommand, RecordCommand>['type'], Status>> = {
  StartEvaluation: 'running',
  CompleteEvaluation: 'completed',
  FailEvaluation: 'failed',
  CancelEvaluation: 'cancelled',
};

function resultOf(logged: LoggedCommand): CommandResult {
  return { evalId: logged.evalId, revision: logged.revision, position: logged.position };
}

function replayOfRequest(
  command: Command,
  prior: LoggedCommand | undefined,
  ctx: DecisionContext,
): CommandResult | undefined {
  if (prior === undefined) return undefined;
  if (prior.commandHash !== ctx.commandHash) {
    throw new AlreadyExistsError(
      `request_id "${command.requestId ?? ''}" was already used for a different command (on evaluation ${prior.evalId})`,
    );
  }
  return resultOf(prior);
}

function checkExpectedRevision(command: Command, evalId: string, current: string): void {
  if (command.expectedRevision !== undefined && command.expectedRevision !== current) {
    throw new RevisionConflictError(evalId, command.expectedRevision, current);
  }
}

/**
 * Decides what a submit does. `evalId` is the id to use (the client's, or a fresh one).
 * Pure: no I/O, no clock, no randomness beyond what the context carries.
 */
export function decideSubmit(
  command: SubmitEvaluation,
  evalId: string,
  existing: EvaluationSnapshot | undefined,
  priorRequest: LoggedCommand | undefined,
  ctx: DecisionContext,
): Decision {
  const replay = replayOfRequest(command, priorRequest, ctx);
  if (replay !== undefined) return { kind: 'unchanged', result: replay };
  if (existing !== undefined) {
    // A late retry of the original submit gets the original answer, whatever happened since.
    if (existing.submitted.commandHash === ctx.commandHash)
      return { kind: 'unchanged', result: resultOf(existing.submitted) };
    throw new AlreadyExistsError(`evaluation ${evalId} already exists with different content`);
  }
  checkExpectedRevision(command, evalId, '0');
  const code = Buffer.from(command.code, 'utf8');
  return {
    kind: 'append',
    evalId,
    fromRevision: '0',
    toRevision: '1',
    status: 'queued',
    event: {
      type: 'EvaluationQueued',
      data: {
        codeHash: createHash('sha256').update(code).digest('hex'),
        codeSize: code.length,
        language: command.language,
        engine: command.engine,
        timeoutSeconds: command.timeoutSeconds,
        metadata: command.metadata,
        createdAt: ctx.now.toISOString(),
        tenantId: ctx.tenant ?? DEFAULT_TENANT,
      },
    },
  };
}

function eventOf(command: Exclude<EvaluationCommand, RecordCommand>, ctx: DecisionContext): EvaluationEvent {
  const at = ctx.now.toISOString();
  switch (command.type) {
    case 'StartEvaluation':
      return {
        type: 'EvaluationStarted',
        data: { executorId: command.executorId, containerId: command.containerId, startedAt: at },
      };
    case 'CompleteEvaluation':
      if (ctx.body === undefined) throw new Error('CompleteEvaluation needs its body planned');
      return { type: 'EvaluationCompleted', data: { exitCode: command.exitCode, completedAt: at, output: ctx.body } };
    case 'FailEvaluation':
      if (ctx.body === undefined) throw new Error('FailEvaluation needs its body planned');
      return {
        type: 'EvaluationFailed',
        data: { exitCode: command.exitCode, reason: command.reason, completedAt: at, error: ctx.body },
      };
    case 'CancelEvaluation':
      return { type: 'EvaluationCancelled', data: { reason: command.reason, cancelledAt: at } };
    default: {
      const unreachable: never = command;
      throw new Error(`unknown command ${JSON.stringify(unreachable)}`);
    }
  }
}

/**
 * Decides what a command on an existing evaluation does: replay an earlier answer, append
 * one event, or refuse (NotFound, RevisionConflict, IllegalTransition, AlreadyExists).
 */
export function decideChange(
  command: EvaluationCommand,
  snapshot: EvaluationSnapshot | undefined,
  priorRequest: LoggedCommand | undefined,
  ctx: DecisionContext,
): Decision {
  checkReporter(command, snapshot, ctx.caller);
  const replay = replayOfRequest(command, priorRequest, ctx);
  if (replay !== undefined) return { kind: 'unchanged', result: replay };
  if (snapshot === undefined) throw new NotFoundError(`evaluation ${command.evalId} not found`);
  if (snapshot.latest.commandHash === ctx.commandHash) return { kind: 'unchanged', result: resultOf(snapshot.latest) };
  checkExpectedRevision(command, snapshot.evalId, snapshot.revision);
  if (command.type === 'RecordMetrics') return decideMetrics(command, snapshot, ctx);
  if (command.type === 'RecordSecurityEvent') return decideSecurityEvent(command, snapshot, ctx);
  if (command.type === 'AppendLogSegment') return decideLogSegment(command, snapshot, ctx);
  if (command.type === 'MoveBlob') {
    // In any status: where a blob is kept is no part of the evaluation's life. The write
    // itself checks that the row names the key in the other store (evaluation-store.ts).
    const { kind, key, to } = command;
    return nextEvent(snapshot, snapshot.status, {
      type: 'EvaluationBlobMoved',
      data: { kind, key, to, ...(command.offset !== undefined ? { offset: command.offset } : {}) },
    });
  }
  const target = TARGET_STATUS[command.type];
  if (!canTransition(snapshot.status, target)) {
    throw new IllegalTransitionError(snapshot.evalId, snapshot.status, target);
  }
  return nextEvent(snapshot, target, eventOf(command, ctx));
}

/** The commands of executors: from an evaluation's start on, only its executor's (or an admin's). */
const EXECUTOR_REPORTS: ReadonlySet<EvaluationCommand['type']> = new Set([
  'StartEvaluation',
  'CompleteEvaluation',
  'FailEvaluation',
  'RecordMetrics',
  'RecordSecurityEvent',
  'AppendLogSegment',
]);

/**
 * The executor binding: a start names the caller itself as the executor, and once started an
 * evaluation hears only from that executor. Checked before anything else, so that another
 * executor learns nothing of the evaluation (not even a replayed answer) and writes nothing.
 * Admins and the service itself (no caller) act for any executor.
 */
export function checkReporter(
  command: EvaluationCommand,
  snapshot: Pick<EvaluationSnapshot, 'evalId' | 'executorId'> | undefined,
  caller: Caller | undefined,
): void {
  if (caller === undefined || caller.roles.has('admin') || !EXECUTOR_REPORTS.has(command.type)) return;
  // An executor starts as itself: the binding below is then to the caller.
  if (command.type === 'StartEvaluation') checkActsAsItself(command.executorId, caller, 'starts evaluations');
  if (snapshot !== undefined) checkBoundExecutor(snapshot, caller);
}

/**
 * That an `executor_id` a caller sends is its own identity (an admin, or the service with no
 * caller, acts for any executor): `doing` says what it does as itself.
 */
export function checkActsAsItself(executorId: string, caller: Caller | undefined, doing: string): void {
  if (caller === undefined || caller.roles.has('admin') || executorId === caller.subject) return;
  throw new PermissionDeniedError(
    `executor_id ${executorId} is not the caller's identity ${caller.subject}: an executor ${doing} as itself`,
  );
}

/** That `caller` is the executor the evaluation is bound to, an admin, or the service (no caller). */
export function checkBoundExecutor(
  snapshot: Pick<EvaluationSnapshot, 'evalId' | 'executorId'>,
  caller: Caller | undefined,
): void {
  if (caller === undefined || caller.roles.has('admin') || snapshot.executorId === undefined) return;
  if (snapshot.executorId !== caller.subject) {
    throw new PermissionDeniedError(
      `evaluation ${snapshot.evalId} is bound to another executor; ${caller.subject} may not report for it`,
    );
  }
}

/** The decision to append `event` as the evaluation's next revision, leaving it in `status`. */
function nextEvent(
  snapshot: EvaluationSnapshot,
  status: Status,
  event: EvaluationEvent,
): Extract<Decision, { kind: 'append' }> {
  return {
    kind: 'append',
    evalId: snapshot.evalId,
    fromRevision: snapshot.revision,
    toRevision: String(BigInt(snapshot.revision) + 1n),
    status,
    event,
  };
}

/**
 * RecordMetrics on an evaluation that exists: refused once it has been over for longer than the
 * grace period, when a point's timestamp is implausible, or when it would take the evaluation
 * past its number of metric names; otherwise one event summing the call up. Points without a
 * timestamp get the decision's clock.
 */
function decideMetrics(command: RecordMetrics, snapshot: EvaluationSnapshot, ctx: DecisionContext): Decision {
  const rules = ctx.metricRules;
  if (rules === undefined) throw new Error('RecordMetrics needs its metric rules');
  if (isTerminal(snapshot.status) && snapshot.endedAt !== undefined) {
    const closesAt = snapshot.endedAt.getTime() + rules.metricsAfterTerminalMs;
    if (ctx.now.getTime() > closesAt) {
      throw new FailedPreconditionError(
        snapshot.evalId,
        'METRICS_CLOSED',
        `evaluation ${snapshot.evalId} is ${snapshot.status} since ${snapshot.endedAt.toISOString()}; metrics are accepted until ${rules.metricsAfterTerminalMs / 1000} s after it ends`,
      );
    }
  }
  const now = ctx.now.toISOString();
  const violations: FieldViolation[] = [];
  const names = new Set(snapshot.metricNames);
  const points = command.points.map((point, i): MetricPoint => {
    const field = `metrics[${i}]`;
    const implausible = implausibleTime(`${field}.timestamp`, point.timestamp, snapshot, ctx);
    if (implausible !== undefined) violations.push(implausible);
    if (!names.has(point.name)) {
      names.add(point.name);
      if (names.size > rules.maxMetricNames) {
        violations.push({
          field: `${field}.name`,
          rule: 'TOO_MANY_NAMES',
          description: `evaluation ${snapshot.evalId} may have at most ${rules.maxMetricNames} metric names; ${field}.name ${point.name} would be one more`,
        });
      }
    }
    return { ...point, timestamp: point.timestamp ?? now };
  });
  if (violations.length > 0) throw new ValidationError(violations);
  return {
    ...nextEvent(snapshot, snapshot.status, {
      type: 'EvaluationMetricsRecorded',
      data: { points: points.length, metrics: summarizeBatch(points) },
    }),
    metrics: { points, names: [...names].sort() },
  };
}

/** The violation of a reported time (ISO-8601) more than a day outside the evaluation's life; none when absent. */
function implausibleTime(
  field: string,
  time: string | undefined,
  snapshot: EvaluationSnapshot,
  ctx: DecisionContext,
): FieldViolation | undefined {
  if (time === undefined) return undefined;
  const earliest = snapshot.createdAt.getTime() - CLOCK_SLACK_MS;
  const latest = ctx.now.getTime() + CLOCK_SLACK_MS;
  const at = new Date(time).getTime();
  if (at >= earliest && at <= latest) return undefined;
  return {
    field,
    rule: 'OUT_OF_RANGE',
    description: `${field} ${time} must be within a day of the evaluation's life (from ${new Date(earliest).toISOString()} to ${new Date(latest).toISOString()})`,
  };
}

/**
 * RecordSecurityEvent: accepted in any status (an audit trail keeps what is reported after the
 * end too: a violation is often reported with, or after, the failure it caused), as one event.
 */
function decideSecurityEvent(
  command: RecordSecurityEvent,
  snapshot: EvaluationSnapshot,
  ctx: DecisionContext,
): Decision {
  const implausible = implausibleTime('occurred_at', command.occurredAt, snapshot, ctx);
  if (implausible !== undefined) throw new ValidationError([implausible]);
  const occurredAt = command.occurredAt ?? ctx.now.toISOString();
  const { report } = command;
  const event: EvaluationEvent =
    report.kind === 'container_created'
      ? {
          type: 'EvaluationContainerCreated',
          data: { containerId: report.containerId, image: report.image, limits: report.limits, occurredAt },
        }
      : {
          type: 'EvaluationSecurityViolation',
          data: {
            containerId: report.containerId,
            violationType: report.violationType,
            severity: report.severity,
            actionTaken: report.actionTaken,
            details: report.details,
            occurredAt,
          },
        };
  return nextEvent(snapshot, snapshot.status, event);
}

/**
 * A segment of a log: taken while the evaluation runs and for the grace period after it ended,
 * only where the stored log ends (so a log is gap-free, and no byte is stored twice). A segment
 * wholly stored already is acknowledged as it is; one that starts elsewhere is
 * FAILED_PRECONDITION (LOG_GAP) naming the offset to write next.
 */
function decideLogSegment(command: AppendLogSegment, snapshot: EvaluationSnapshot, ctx: DecisionContext): Decision {
  const rules = ctx.logRules;
  if (rules === undefined) throw new Error('AppendLogSegment needs its log rules');
  const { evalId } = snapshot;
  if (snapshot.status === 'queued') {
    throw new FailedPreconditionError(
      evalId,
      'LOGS_NOT_STARTED',
      `evaluation ${evalId} is queued; its logs are taken once it runs (StartEvaluation)`,
    );
  }
  if (isTerminal(snapshot.status) && snapshot.endedAt !== undefined) {
    if (ctx.now.getTime() > snapshot.endedAt.getTime() + rules.logsAfterTerminalMs) {
      throw new FailedPreconditionError(
        evalId,
        'LOGS_CLOSED',
        `evaluation ${evalId} is ${snapshot.status} since ${snapshot.endedAt.toISOString()}; logs are taken until ${rules.logsAfterTerminalMs / 1000} s after it ends`,
      );
    }
  }
  const stored = snapshot.logBytes[command.stream];
  const length = command.data.length;
  if (command.offset + length <= stored) return { kind: 'unchanged', result: resultOf(snapshot.latest) };
  if (command.offset !== stored) throw logGap(evalId, command.stream, stored, command.offset);
  return {
    ...nextEvent(snapshot, snapshot.status, {
      type: 'EvaluationLogsAppended',
      data: { stream: command.stream, offset: command.offset, length },
    }),
    log: { stream: command.stream, offset: command.offset, length },
  };
}

/** FAILED_PRECONDITION for bytes that do not start where the stored log ends. */
export function logGap(evalId: string, stream: LogStream, stored: number, offset: number): FailedPreconditionError {
  return new FailedPreconditionError(
    evalId,
    'LOG_GAP',
    `the ${stream} log of ${evalId} holds ${stored} bytes: the next chunk must start at offset ${stored}, not ${offset}`,
  );
}
