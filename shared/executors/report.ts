import { ExecutorStatus } from '../generated/crucible/storage/v1/evaluation';

/** What an executor says about itself (the proto's ExecutorStatus, lower case). */
export type ExecutorState = 'healthy' | 'degraded' | 'draining';

/** One validated health report, as the command service received it. */
export interface ExecutorHealthReport {
  readonly executorId: string;
  readonly status: ExecutorState;
  /** Evaluations it can run at once; 0 or more. */
  readonly capacity: number;
  /** Evaluations it ran when it reported; 0 or more. */
  readonly running: number;
  /** Empty when it gave none. */
  readonly version: string;
  /** Finite values by name. */
  readonly metrics: Readonly<Record<string, number>>;
}

/**
 * A report as Redis keeps it: with when it arrived, by the command service's clock, and the
 * reporter's tenant (only that tenant's callers list it).
 */
export interface StoredExecutorHealth extends ExecutorHealthReport {
  readonly reportedAt: Date;
  readonly tenant: string;
}

/** The limits of a report (proto: ReportExecutorHealthRequest). */
export const MAX_EXECUTOR_ID = 128;
export const MAX_EXECUTOR_VERSION = 64;
export const MAX_EXECUTOR_METRICS = 64;
export const MAX_EXECUTOR_METRIC_NAME = 128;

const TO_PROTO: Readonly<Record<ExecutorState, ExecutorStatus>> = {
  healthy: ExecutorStatus.EXECUTOR_STATUS_HEALTHY,
  degraded: ExecutorStatus.EXECUTOR_STATUS_DEGRADED,
  draining: ExecutorStatus.EXECUTOR_STATUS_DRAINING,
};

export const EXECUTOR_STATES = Object.keys(TO_PROTO) as readonly ExecutorState[];

export function executorStateToProto(state: ExecutorState): ExecutorStatus {
  return TO_PROTO[state];
}

/** The state a wire value names; undefined for UNSPECIFIED and for values this version does not know. */
export function executorStateOfProto(status: number): ExecutorState | undefined {
  return EXECUTOR_STATES.find((state) => TO_PROTO[state] === status);
}
