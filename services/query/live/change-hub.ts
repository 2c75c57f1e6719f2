import { DeadlineError, UnavailableError } from '../../../shared/errors';
import type { Change } from './change';
import { createKeyedListeners } from './keyed-listeners';
import type { Shutdown } from './shutdown';

export type ChangeListener = (change: Change) => void;

export interface WaitOptions {
  /** The client went away: resolve quietly (the call is over anyway). */
  readonly signal: AbortSignal;
  readonly deadline: Date | undefined;
  /** The server is shutting down: UNAVAILABLE. */
  readonly shutdown: Shutdown;
}

/**
 * In-memory fan-out of applied changes to this replica's watchers, fed by the one change-log
 * tail of the replica, in position order without gaps. It also knows the position the read
 * models have reached (as far as this replica has read), for `min_position` waits.
 */
export interface ChangeHub {
  /** Highest position dispatched (every position up to it is in the read models). */
  readonly appliedPosition: bigint;
  /** Every change, in position order. Returns the unsubscribe function. */
  onAny(listener: ChangeListener): () => void;
  /** Changes of one evaluation, in revision order. Returns the unsubscribe function. */
  onEvaluation(evalId: string, listener: ChangeListener): () => void;
  /** Dispatches the next change (called by the tail only). */
  publish(change: Change): void;
  /** Moves the applied position without updates (the tail's starting point). */
  advanceTo(position: bigint): void;
  /**
   * Resolves once `position` is applied. DeadlineError when the deadline passes first,
   * UnavailableError on shutdown; resolves when the client cancels.
   */
  waitForPosition(position: bigint, options: WaitOptions): Promise<void>;
  /** Listeners currently registered (tests, diagnostics). */
  readonly listenerCount: number;
}

interface Waiter {
  readonly position: bigint;
  readonly resolve: () => void;
}

export function createChangeHub(onListenerError: (err: unknown) => void = () => undefined): ChangeHub {
  let applied = 0n;
  const anyListeners = new Set<ChangeListener>();
  const byEvaluation = createKeyedListeners<ChangeListener>();
  // Sorted by position, so that a dispatch releases a prefix.
  let waiters: Waiter[] = [];

  const release = (): void => {
    if (waiters.length === 0 || (waiters[0]?.position ?? 0n) > applied) return;
    const ready = waiters.filter((w) => w.position <= applied);
    waiters = waiters.filter((w) => w.position > applied);
    for (const w of ready) w.resolve();
  };

  const dispatch = (listeners: Iterable<ChangeListener>, change: Change): void => {
    for (const listener of listeners) {
      try {
        listener(change);
      } catch (err) {
        // One broken watcher must not stop the others, nor the replica's feed.
        onListenerError(err);
      }
    }
  };

  return {
    get appliedPosition() {
      return applied;
    },
    get listenerCount() {
      return anyListeners.size + byEvaluation.size;
    },
    onAny(listener) {
      anyListeners.add(listener);
      return () => anyListeners.delete(listener);
    },
    onEvaluation(evalId, listener) {
      return byEvaluation.add(evalId, listener);
    },
    publish(change) {
      if (change.position <= applied) return;
      applied = change.position;
      dispatch(byEvaluation.of(change.evalId), change);
      dispatch([...anyListeners], change);
      release();
    },
    advanceTo(position) {
      if (position > applied) applied = position;
      release();
    },
    waitForPosition(position, { signal, deadline, shutdown }) {
      if (position <= applied) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        let unsubscribe = (): void => undefined;
        const cleanup = (): void => {
          if (timer !== undefined) clearTimeout(timer);
          signal.removeEventListener('abort', onCancel);
          unsubscribe();
          waiters = waiters.filter((w) => w !== waiter);
        };
        const waiter: Waiter = {
          position,
          resolve: () => {
            cleanup();
            resolve();
          },
        };
        const onCancel = (): void => {
          cleanup();
          resolve();
        };
        const onShutdown = (): void => {
          cleanup();
          reject(new UnavailableError(`server shutting down; retry (position ${position} not yet applied)`));
        };
        if (signal.aborted) return onCancel();
        if (shutdown.aborted) return onShutdown();
        signal.addEventListener('abort', onCancel);
        unsubscribe = shutdown.subscribe(onShutdown);
        if (deadline !== undefined) {
          timer = setTimeout(
            () => {
              cleanup();
              reject(
                new DeadlineError(`the read models have not reached position ${position} yet (they are at ${applied})`),
              );
            },
            Math.min(2 ** 31 - 1, Math.max(0, deadline.getTime() - Date.now())),
          );
        }
        const at = waiters.findIndex((w) => w.position > position);
        if (at === -1) waiters.push(waiter);
        else waiters.splice(at, 0, waiter);
      });
    },
  };
}
