import type { LogStream } from '../../../shared/domain';
import { createKeyedListeners } from './keyed-listeners';

/**
 * Wake-ups for the followers of live logs (ReadLogs with `follow`), straight from the command
 * side's announcement that an evaluation stored some of its logs (shared/changes,
 * announcedLogsAppended). A follower reads the log from PostgreSQL, not from the read models,
 * so it need not wait for the projection to apply the change and the change log to carry it
 * (tens of ms under load): the announcement comes as soon as the segment committed. Only a
 * hint: one lost is made up by the hub's change of the same event, one forged costs a read.
 */
export interface LogHints {
  /** Calls `listener` on each hint for `evalId`'s `stream`. Returns the unsubscribe function. */
  on(evalId: string, stream: LogStream, listener: () => void): () => void;
  /** Wakes the followers of `evalId`'s `stream` on this replica (the change subscriber's). */
  hint(evalId: string, stream: LogStream): void;
}

export function createLogHints(): LogHints {
  const listeners = createKeyedListeners<() => void>();
  return {
    on: (evalId, stream, listener) => listeners.add(`${stream}\0${evalId}`, listener),
    hint(evalId, stream) {
      for (const listener of listeners.of(`${stream}\0${evalId}`)) listener();
    },
  };
}
