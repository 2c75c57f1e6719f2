/**
 * The server's shutdown as its calls see it. Every open stream and waiting read subscribes, and
 * there may be 10,000 of them: an AbortSignal walks its whole listener list on every
 * addEventListener (to drop duplicates), which made opening n streams O(n²) (a visible share of
 * the query service's CPU when 10,000 streams opened: docs/benchmarks.md); a Set adds and
 * removes in O(1).
 */
export interface Shutdown {
  readonly aborted: boolean;
  /** Calls `listener` once when the shutdown starts; returns the call that unsubscribes it. */
  subscribe(listener: () => void): () => void;
}

export function createShutdown(): { shutdown: Shutdown; begin(): void } {
  const listeners = new Set<() => void>();
  let aborted = false;
  return {
    shutdown: {
      get aborted() {
        return aborted;
      },
      subscribe(listener) {
        if (!aborted) listeners.add(listener);
        return () => listeners.delete(listener);
      },
    },
    begin() {
      if (aborted) return;
      aborted = true;
      const subscribed = [...listeners];
      listeners.clear();
      for (const listener of subscribed) listener();
    },
  };
}
