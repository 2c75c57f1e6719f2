import type {
  BlobHome,
  BodyKind,
  ContainerLimits,
  FailureKind,
  LogStream,
  Severity,
  ViolationKind,
} from '../../../shared/domain';
import type { UploadedOutput } from './bodies';

/** Fields every command may carry. */
interface CommandOptions {
  /** Idempotency key; a repeat with the same key returns the original answer. */
  readonly requestId?: string;
  /** Optimistic concurrency: apply only at this revision (decimal string; "0" = must not exist). */
  readonly expectedRevision?: string;
}

/** Validated commands, named in the imperative; each becomes exactly one event. */
export interface SubmitEvaluation extends CommandOptions {
  readonly type: 'SubmitEvaluation';
  /** Undefined when the server must assign one. */
  readonly evalId?: string;
  readonly code: string;
  readonly language: string;
  readonly engine: string;
  readonly timeoutSeconds: number;
  readonly metadata: Record<string, unknown>;
}

export interface StartEvaluation extends CommandOptions {
  readonly type: 'StartEvaluation';
  readonly evalId: string;
  readonly executorId: string;
  readonly containerId: string;
}

export interface CompleteEvaluation extends CommandOptions {
  readonly type: 'CompleteEvaluation';
  readonly evalId: string;
  /** The bytes, or (a streamed completion) where they were stored as they arrived. */
  readonly output: Buffer | UploadedOutput;
  readonly exitCode: number;
}

export interface FailEvaluation extends CommandOptions {
  readonly type: 'FailEvaluation';
  readonly evalId: string;
  readonly error: string;
  readonly exitCode: number;
  readonly reason: FailureKind;
}

export interface CancelEvaluation extends CommandOptions {
  readonly type: 'CancelEvaluation';
  readonly evalId: string;
  readonly reason: string;
}

/** A metric point as reported: its timestamp may be left to the service's clock. */
export interface ReportedMetricPoint {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  /** Decimal string (int64, 0 or more). */
  readonly step?: string;
  /** ISO-8601; absent: when the command is decided. */
  readonly timestamp?: string;
}

export interface RecordMetrics extends CommandOptions {
  readonly type: 'RecordMetrics';
  readonly evalId: string;
  readonly points: readonly ReportedMetricPoint[];
}

/** What RecordSecurityEvent reports: one of the two kinds of the seeds' security tables. */
export type SecurityReport =
  | {
      readonly kind: 'container_created';
      readonly containerId: string;
      readonly image: string;
      readonly limits: ContainerLimits;
    }
  | {
      readonly kind: 'resource_violation';
      readonly containerId: string;
      readonly violationType: ViolationKind;
      readonly severity: Severity;
      readonly actionTaken: string;
      readonly details: Record<string, unknown>;
    };

export interface RecordSecurityEvent extends CommandOptions {
  readonly type: 'RecordSecurityEvent';
  readonly evalId: string;
  readonly report: SecurityReport;
  /** ISO-8601, the reporter's clock; absent: when the command is decided. */
  readonly occurredAt?: string;
}

/**
 * One segment of a log, as an AppendLogs call flushes it: the bytes of `stream` from `offset`.
 * Not a request of its own: the AppendLogs handler cuts a call's chunks into these.
 */
export interface AppendLogSegment extends CommandOptions {
  readonly type: 'AppendLogSegment';
  readonly evalId: string;
  readonly stream: LogStream;
  readonly offset: number;
  readonly data: Buffer;
}

/**
 * The service's own: a blob kept in the fallback store is in S3 now (the mover copied it). `kind`
 * names the body, or the log stream with the segment's `offset`.
 */
export interface MoveBlob extends CommandOptions {
  readonly type: 'MoveBlob';
  readonly evalId: string;
  readonly kind: BodyKind | LogStream;
  readonly offset?: number;
  readonly key: string;
  readonly to: BlobHome;
}

export type Command =
  | SubmitEvaluation
  | StartEvaluation
  | CompleteEvaluation
  | FailEvaluation
  | CancelEvaluation
  | RecordMetrics
  | RecordSecurityEvent
  | AppendLogSegment
  | MoveBlob;

/** Every command but SubmitEvaluation acts on an existing evaluation. */
export type EvaluationCommand = Exclude<Command, SubmitEvaluation>;

/** What every command answers (and what an idempotent repeat answers again). */
export interface CommandResult {
  readonly evalId: string;
  readonly revision: string;
  readonly position: string;
}
