import { describeExit, type Child, type ExitStatus } from './child';

/** How a supervised process is restarted after it exits unexpectedly. */
export interface RestartPolicy {
  /** Delay before the first restart; doubled for each further one in a row. */
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  /** A process that ran this long before it exited counts as healthy: the delay starts over. */
  readonly resetAfterMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = { initialDelayMs: 500, maxDelayMs: 30_000, resetAfterMs: 60_000 };

/** The delay before the `restarts`-th restart in a row (1 for the first). */
export function restartDelayMs(policy: RestartPolicy, restarts: number): number {
  return Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.max(0, Math.min(restarts - 1, 30)));
}

export interface SupervisedOptions {
  /** "query service": how log lines name it. */
  readonly name: string;
  /** Starts (or starts again) the process; resolves once it is ready. */
  readonly start: () => Promise<Child>;
  readonly policy?: RestartPolicy;
  /** A line saying what happened and what comes next (a restart and when). */
  readonly log: (line: string) => void;
  /** Told of each start, the first included (tests find the new pid here). */
  readonly onStarted?: (child: Child) => void;
  readonly clock?: () => number;
}

export interface Supervised {
  /** The process running now; undefined while it waits to be restarted. */
  readonly current: Child | undefined;
  /** Restarts so far. */
  readonly restarts: number;
  /** Stops supervising, then stops the process (the signal, SIGKILL after `graceMs`). */
  stop(signal: NodeJS.Signals, graceMs: number): Promise<void>;
}

/**
 * Starts a process and keeps it running: when it exits without being asked to, it is started
 * again after the policy's delay (exponential, reset once it has run long enough). The first
 * start's failure is the caller's (nothing ran yet); a failed restart is retried like an exit.
 */
export async function supervise(options: SupervisedOptions): Promise<Supervised> {
  const policy = options.policy ?? DEFAULT_RESTART_POLICY;
  const clock = options.clock ?? Date.now;
  let current: Child | undefined = await options.start();
  let startedAt = clock();
  let stopping = false;
  let restarts = 0;
  let inARow = 0;
  let cancelWait: (() => void) | undefined;
  options.onStarted?.(current);

  const wait = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      cancelWait = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  const watch = async (child: Child): Promise<void> => {
    let status: ExitStatus | undefined = await child.exited;
    let ranMs = clock() - startedAt;
    while (!stopping) {
      current = undefined;
      if (ranMs >= policy.resetAfterMs) inARow = 0;
      inARow += 1;
      const delay = restartDelayMs(policy, inARow);
      const what = status === undefined ? 'could not be restarted' : `${describeExit(status)} after ${seconds(ranMs)}`;
      options.log(`${options.name} ${what}; restarting in ${seconds(delay)} (restart ${restarts + 1})`);
      await wait(delay);
      if (stopping) return;
      try {
        const next = await options.start();
        restarts += 1;
        startedAt = clock();
        if (stopping) {
          await next.stop('SIGTERM', 10_000);
          return;
        }
        current = next;
        options.log(`${options.name} restarted (pid ${next.pid})`);
        options.onStarted?.(next);
        status = await next.exited;
        ranMs = clock() - startedAt;
      } catch (err) {
        restarts += 1;
        options.log(`${options.name}: restart failed: ${err instanceof Error ? err.message : String(err)}`);
        status = undefined;
        ranMs = 0;
      }
    }
  };
  const watching = watch(current);

  return {
    get current() {
      return current;
    },
    get restarts() {
      return restarts;
    },
    async stop(signal, graceMs) {
      stopping = true;
      cancelWait?.();
      const running = current;
      if (running !== undefined) await running.stop(signal, graceMs);
      await watching;
      current = undefined;
    },
  };
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}
