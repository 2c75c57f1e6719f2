import {
  Evaluation,
  EvaluationStatus,
  EventType,
  FailureReason,
  type ViolationCount,
} from '../generated/crucible/storage/v1/evaluation';
import type { BodyRef, EvaluationEventType, FailureKind, RecordedEvent, ViolationKind } from './events';
import { foldMetrics } from './metrics';
import { tenantOrDefault } from './tenants';
import { VIOLATION_KIND_TO_PROTO } from './security';

export const EVENT_TYPE_TO_PROTO: Readonly<Record<EvaluationEventType, EventType>> = {
  EvaluationQueued: EventType.EVENT_TYPE_EVALUATION_QUEUED,
  EvaluationStarted: EventType.EVENT_TYPE_EVALUATION_STARTED,
  EvaluationCompleted: EventType.EVENT_TYPE_EVALUATION_COMPLETED,
  EvaluationFailed: EventType.EVENT_TYPE_EVALUATION_FAILED,
  EvaluationCancelled: EventType.EVENT_TYPE_EVALUATION_CANCELLED,
  EvaluationMetricsRecorded: EventType.EVENT_TYPE_METRICS_RECORDED,
  EvaluationContainerCreated: EventType.EVENT_TYPE_CONTAINER_CREATED,
  EvaluationSecurityViolation: EventType.EVENT_TYPE_SECURITY_VIOLATION,
  EvaluationLogsAppended: EventType.EVENT_TYPE_LOGS_APPENDED,
  EvaluationBlobMoved: EventType.EVENT_TYPE_BLOB_MOVED,
};

const FAILURE_REASONS: Readonly<Record<FailureKind, FailureReason>> = {
  error: FailureReason.FAILURE_REASON_ERROR,
  timeout: FailureReason.FAILURE_REASON_TIMEOUT,
  executor_lost: FailureReason.FAILURE_REASON_EXECUTOR_LOST,
};

export class ProjectionError extends Error {
  override name = 'ProjectionError';
}

function runtimeMs(startedAt: Date | undefined, completedAt: Date): string {
  return startedAt === undefined ? '0' : String(Math.max(0, completedAt.getTime() - startedAt.getTime()));
}

function bodyFields(body: BodyRef): { preview: Buffer; size: string; location: string } {
  return { preview: Buffer.from(body.previewBase64, 'base64'), size: String(body.size), location: body.location };
}

/**
 * Folds one recorded event into an evaluation's read-model state. Pure and deterministic:
 * the query side's projection and rebuild build every state with it, and the consistency
 * checker folds the log with it to compare (it lives in shared/ because it is the log's
 * meaning, next to the events it folds).
 *
 * Throws ProjectionError when the event does not follow `state` (wrong revision, or an event
 * other than EvaluationQueued for an unknown evaluation).
 */
export function evolve(state: Evaluation | undefined, recorded: RecordedEvent): Evaluation {
  const { event } = recorded;
  const expectedRevision = state === undefined ? 1n : BigInt(state.revision) + 1n;
  if (BigInt(recorded.revision) !== expectedRevision) {
    throw new ProjectionError(
      `event at position ${recorded.position} has revision ${recorded.revision} for ${recorded.evalId}, expected ${expectedRevision}`,
    );
  }
  const common = {
    revision: recorded.revision,
    position: recorded.position,
    updatedAt: new Date(recorded.recordedAt),
    lastEventType: EVENT_TYPE_TO_PROTO[event.type],
  };
  if (event.type === 'EvaluationQueued') {
    if (state !== undefined) throw new ProjectionError(`${recorded.evalId} queued twice`);
    const d = event.data;
    return Evaluation.fromPartial({
      evalId: recorded.evalId,
      status: EvaluationStatus.EVALUATION_STATUS_QUEUED,
      codeHash: d.codeHash,
      codeSize: String(d.codeSize),
      language: d.language,
      engine: d.engine,
      timeoutSeconds: d.timeoutSeconds,
      createdAt: new Date(d.createdAt),
      metadata: d.metadata,
      tenantId: tenantOrDefault(d.tenantId),
      ...common,
    });
  }
  if (state === undefined) {
    throw new ProjectionError(`${event.type} for unknown evaluation ${recorded.evalId}`);
  }
  switch (event.type) {
    case 'EvaluationStarted':
      return {
        ...state,
        ...common,
        status: EvaluationStatus.EVALUATION_STATUS_RUNNING,
        executorId: event.data.executorId,
        containerId: event.data.containerId,
        startedAt: new Date(event.data.startedAt),
      };
    case 'EvaluationCompleted': {
      const completedAt = new Date(event.data.completedAt);
      const body = bodyFields(event.data.output);
      return {
        ...state,
        ...common,
        status: EvaluationStatus.EVALUATION_STATUS_COMPLETED,
        exitCode: event.data.exitCode,
        completedAt,
        runtimeMs: runtimeMs(state.startedAt, completedAt),
        outputPreview: body.preview,
        outputSize: body.size,
        outputLocation: body.location,
      };
    }
    case 'EvaluationFailed': {
      const completedAt = new Date(event.data.completedAt);
      const body = bodyFields(event.data.error);
      return {
        ...state,
        ...common,
        status: EvaluationStatus.EVALUATION_STATUS_FAILED,
        exitCode: event.data.exitCode,
        completedAt,
        runtimeMs: runtimeMs(state.startedAt, completedAt),
        errorPreview: body.preview.toString('utf8'),
        errorSize: body.size,
        errorLocation: body.location,
        failureReason: FAILURE_REASONS[event.data.reason],
      };
    }
    case 'EvaluationCancelled': {
      const completedAt = new Date(event.data.cancelledAt);
      return {
        ...state,
        ...common,
        status: EvaluationStatus.EVALUATION_STATUS_CANCELLED,
        completedAt,
        runtimeMs: runtimeMs(state.startedAt, completedAt),
        cancelReason: event.data.reason,
      };
    }
    case 'EvaluationMetricsRecorded':
      return { ...state, ...common, metrics: foldMetrics(state.metrics, event.data.metrics) };
    case 'EvaluationContainerCreated':
      return { ...state, ...common };
    case 'EvaluationSecurityViolation':
      return { ...state, ...common, violations: countViolation(state.violations, event.data.violationType) };
    case 'EvaluationLogsAppended': {
      const size = String(event.data.offset + event.data.length);
      return event.data.stream === 'stdout'
        ? { ...state, ...common, stdoutBytes: size }
        : { ...state, ...common, stderrBytes: size };
    }
    case 'EvaluationBlobMoved': {
      // Only the output's and the error's homes are on the read model.
      const { kind, to } = event.data;
      if (kind === 'output') return { ...state, ...common, outputLocation: to };
      if (kind === 'error') return { ...state, ...common, errorLocation: to };
      return { ...state, ...common };
    }
    default: {
      const unreachable: never = event;
      throw new ProjectionError(`unknown event ${JSON.stringify(unreachable)}`);
    }
  }
}

/** `counts` (ordered by type) with one more of `kind`. */
function countViolation(counts: readonly ViolationCount[], kind: ViolationKind): ViolationCount[] {
  const type = VIOLATION_KIND_TO_PROTO[kind];
  const seen = counts.find((c) => c.violationType === type);
  const others = counts.filter((c) => c.violationType !== type);
  const counted = { violationType: type, count: String(BigInt(seen?.count ?? '0') + 1n) };
  return [...others, counted].sort((a, b) => a.violationType - b.violationType);
}
