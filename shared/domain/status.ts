/**
 * The status state machine. An executor may report a fast job's end without its start, so
 * QUEUED may go straight to a terminal status; terminal statuses are final.
 */
export type Status = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

export const STATUSES: readonly Status[] = ['queued', 'running', 'completed', 'failed', 'cancelled'];

const ALLOWED: Readonly<Record<Status, readonly Status[]>> = {
  queued: ['running', 'completed', 'failed', 'cancelled'],
  running: ['completed', 'failed', 'cancelled'],
  completed: [],
  failed: [],
  cancelled: [],
};

export function canTransition(from: Status, to: Status): boolean {
  return ALLOWED[from].includes(to);
}

export function isTerminal(status: Status): boolean {
  return ALLOWED[status].length === 0;
}
