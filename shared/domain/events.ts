/**
 * The events of an evaluation's life, as stored in `evaluation_events.data` (JSON) and folded
 * into the read model by `evolve`. Both services share this module; it is the log's schema.
 *
 * Bodies (output, error) are never in an event: an event carries a preview and a reference.
 */

/**
 * The bodies an evaluation stores (`evaluation_bodies.kind`): the submitted code, the output of
 * its completion, the error of its failure.
 */
export type BodyKind = 'code' | 'output' | 'error';

/**
 * Where a whole body is kept. "" when there is none; "file": in the command service's fallback
 * store while S3 was unreachable, until it is moved to S3 (EvaluationBlobMoved).
 */
export type BodyLocation = '' | 'postgres' | 's3' | 'file';

/** The blob stores a large body or log segment can be in. */
export type BlobHome = 's3' | 'file';

export interface BodyRef {
  /** The first bytes of the body, base64 (output is bytes) . */
  readonly previewBase64: string;
  readonly size: number;
  readonly location: BodyLocation;
  /** Object key when location is "s3". */
  readonly s3Key?: string;
}

export interface EvaluationQueued {
  readonly type: 'EvaluationQueued';
  readonly data: {
    readonly codeHash: string;
    readonly codeSize: number;
    readonly language: string;
    readonly engine: string;
    readonly timeoutSeconds: number;
    readonly metadata: Record<string, unknown>;
    /** ISO-8601 */
    readonly createdAt: string;
    /** The submitter's tenant; absent in events stored before tenants (DEFAULT_TENANT). */
    readonly tenantId?: string;
  };
}

export interface EvaluationStarted {
  readonly type: 'EvaluationStarted';
  readonly data: { readonly executorId: string; readonly containerId: string; readonly startedAt: string };
}

export interface EvaluationCompleted {
  readonly type: 'EvaluationCompleted';
  readonly data: { readonly exitCode: number; readonly completedAt: string; readonly output: BodyRef };
}

/** Why an evaluation failed: `executor_lost` (and a `timeout` past the grace) only the service decides. */
export type FailureKind = 'error' | 'timeout' | 'executor_lost';

export interface EvaluationFailed {
  readonly type: 'EvaluationFailed';
  readonly data: {
    readonly exitCode: number;
    readonly reason: FailureKind;
    readonly completedAt: string;
    readonly error: BodyRef;
  };
}

export interface EvaluationCancelled {
  readonly type: 'EvaluationCancelled';
  readonly data: { readonly reason: string; readonly cancelledAt: string };
}

/**
 * One metric's points of one RecordMetrics call, summed up: what the read model folds into the
 * evaluation's summary of that metric (shared/domain/metrics.ts). The points themselves are rows
 * of `evaluation_metrics`, written in the same transaction.
 */
export interface MetricBatchSummary {
  readonly name: string;
  /** The unit of the latest point. */
  readonly unit: string;
  readonly count: number;
  readonly min: number;
  readonly max: number;
  /** The latest point: highest step (none before any), then timestamp, then the last given. */
  readonly lastValue: number;
  /** Decimal string (int64); absent when the latest point has no step. */
  readonly lastStep?: string;
  /** ISO-8601 */
  readonly lastTimestamp: string;
}

export interface EvaluationMetricsRecorded {
  readonly type: 'EvaluationMetricsRecorded';
  readonly data: {
    /** How many points the call stored. */
    readonly points: number;
    /** One per metric name of the call, ordered by name. */
    readonly metrics: readonly MetricBatchSummary[];
  };
}

/** Which limit a sandbox broke (the proto's ViolationType, lower case). */
export type ViolationKind = 'memory' | 'cpu' | 'pids' | 'disk' | 'network' | 'syscall' | 'timeout' | 'other';

export type Severity = 'low' | 'medium' | 'high' | 'critical';

/** A sandbox's limits; absent: no limit. */
export interface ContainerLimits {
  readonly cpuCores?: number;
  readonly memoryBytes?: string;
  readonly pids?: string;
  readonly network?: string;
  readonly diskBytes?: string;
  readonly timeoutSeconds?: number;
}

/** An executor created a sandbox for the evaluation (its row: `security_audit`). */
export interface EvaluationContainerCreated {
  readonly type: 'EvaluationContainerCreated';
  readonly data: {
    readonly containerId: string;
    readonly image: string;
    readonly limits: ContainerLimits;
    /** ISO-8601, the reporter's clock. */
    readonly occurredAt: string;
  };
}

/** The evaluation's sandbox broke a limit (its row: `security_events`). */
export interface EvaluationSecurityViolation {
  readonly type: 'EvaluationSecurityViolation';
  readonly data: {
    readonly containerId: string;
    readonly violationType: ViolationKind;
    readonly severity: Severity;
    readonly actionTaken: string;
    readonly details: Record<string, unknown>;
    /** ISO-8601, the reporter's clock. */
    readonly occurredAt: string;
  };
}

/** One of an evaluation's two logs. */
export type LogStream = 'stdout' | 'stderr';

/**
 * A segment of a log was stored (its row: `evaluation_log_segments`): the bytes
 * [offset, offset + length) of `stream`, which then holds offset + length bytes.
 */
export interface EvaluationLogsAppended {
  readonly type: 'EvaluationLogsAppended';
  readonly data: { readonly stream: LogStream; readonly offset: number; readonly length: number };
}

/**
 * A blob kept in the fallback file store was copied to S3 (the mover's): `kind` names the body,
 * or the log stream with the segment's `offset`.
 */
export interface EvaluationBlobMoved {
  readonly type: 'EvaluationBlobMoved';
  readonly data: {
    readonly kind: BodyKind | LogStream;
    readonly offset?: number;
    readonly key: string;
    readonly to: BlobHome;
  };
}

export type EvaluationEvent =
  | EvaluationQueued
  | EvaluationStarted
  | EvaluationCompleted
  | EvaluationFailed
  | EvaluationCancelled
  | EvaluationMetricsRecorded
  | EvaluationContainerCreated
  | EvaluationSecurityViolation
  | EvaluationLogsAppended
  | EvaluationBlobMoved;

export type EvaluationEventType = EvaluationEvent['type'];

/** An event as the log holds it: its place in the global order and in its evaluation's life. */
export interface RecordedEvent {
  /** Global, dense, commit-ordered position (decimal string: 64-bit). */
  readonly position: string;
  readonly evalId: string;
  /** Revision of the evaluation after this event (decimal string). */
  readonly revision: string;
  /** ISO-8601 */
  readonly recordedAt: string;
  readonly event: EvaluationEvent;
}
