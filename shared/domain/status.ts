import { EvaluationStatus } from '../generated/crucible/storage/v1/evaluation';
import type { EvaluationEventType } from './events';

/**
 * The status of an evaluation, the one place that knows it: its names (as PostgreSQL's
 * `evaluations.status` and the read models' index keys spell them), its wire enum, and the
 * state machine. An executor may report a fast job's end without its start, so QUEUED may go
 * straight to a terminal status; terminal statuses are final.
 */
export type Status = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

/** `endedBy`: the one event that puts an evaluation in a terminal status. */
const FACTS: Readonly<
  Record<
    Status,
    { readonly proto: EvaluationStatus; readonly next: readonly Status[]; readonly endedBy?: EvaluationEventType }
  >
> = {
  queued: { proto: EvaluationStatus.EVALUATION_STATUS_QUEUED, next: ['running', 'completed', 'failed', 'cancelled'] },
  running: { proto: EvaluationStatus.EVALUATION_STATUS_RUNNING, next: ['completed', 'failed', 'cancelled'] },
  completed: { proto: EvaluationStatus.EVALUATION_STATUS_COMPLETED, next: [], endedBy: 'EvaluationCompleted' },
  failed: { proto: EvaluationStatus.EVALUATION_STATUS_FAILED, next: [], endedBy: 'EvaluationFailed' },
  cancelled: { proto: EvaluationStatus.EVALUATION_STATUS_CANCELLED, next: [], endedBy: 'EvaluationCancelled' },
};

export const STATUSES: readonly Status[] = Object.keys(FACTS) as Status[];

const BY_PROTO: ReadonlyMap<EvaluationStatus, Status> = new Map(STATUSES.map((s) => [FACTS[s].proto, s]));

export function canTransition(from: Status, to: Status): boolean {
  return FACTS[from].next.includes(to);
}

export function isTerminal(status: Status): boolean {
  return FACTS[status].next.length === 0;
}

export function statusToProto(status: Status): EvaluationStatus {
  return FACTS[status].proto;
}

/** The status of a wire value; undefined for UNSPECIFIED and values this version does not know. */
export function statusOfProto(value: EvaluationStatus | undefined): Status | undefined {
  return value === undefined ? undefined : BY_PROTO.get(value);
}

/** The status stored as text (PostgreSQL); undefined for text that is no status. */
export function parseStatus(text: string): Status | undefined {
  return Object.hasOwn(FACTS, text) ? (text as Status) : undefined;
}

/** The event that ended an evaluation in terminal `status`; undefined for a status that is not terminal. */
export function endingEvent(status: Status): EvaluationEventType | undefined {
  return FACTS[status].endedBy;
}

/** Terminal, given a wire value (the read models and streams hold those). */
export function isTerminalProto(value: EvaluationStatus | undefined): boolean {
  const status = statusOfProto(value);
  return status !== undefined && isTerminal(status);
}
