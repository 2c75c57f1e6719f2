/** A task run on a timer, one run at a time. */
export interface Periodic {
  /** Starts the timer (the first run after one interval); idempotent. */
  start(): void;
  /** Stops the timer and waits for a run under way; no run starts after it. */
  stop(): Promise<void>;
  /** Whether stop() was called: a long run checks it between its steps. */
  readonly stopped: boolean;
}

/**
 * Runs `task` every `intervalMs` after the previous run ended (runs never overlap, and a slow
 * one delays the next rather than piling up), reporting a failure to `onError` and going on.
 * The timer does not keep the process alive.
 */
export function createPeriodic(
  task: () => Promise<unknown>,
  intervalMs: number,
  onError: (err: unknown) => void,
): Periodic {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let underWay: Promise<void> | undefined;

  const schedule = (): void => {
    timer = setTimeout(() => {
      timer = undefined;
      underWay = task()
        .then(() => undefined, onError)
        .finally(() => {
          underWay = undefined;
          if (!stopped) schedule();
        });
    }, intervalMs);
    timer.unref();
  };

  return {
    start() {
      if (!stopped && timer === undefined && underWay === undefined) schedule();
    },
    async stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      await underWay;
    },
    get stopped() {
      return stopped;
    },
  };
}
