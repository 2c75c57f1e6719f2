import { DeadlineError, UnavailableError } from '../../../shared/errors';

export interface AdmissionLimits {
  /** Commands in progress at once (MAX_PENDING_COMMANDS). */
  readonly maxInProgress: number;
  /** Commands waiting for a place past those (MAX_QUEUED_COMMANDS). */
  readonly maxQueued: number;
}

export interface AdmitOptions {
  /** The call's deadline: a command that would wait past it is refused at once. */
  readonly deadline?: Date | undefined;
  /** Fires when the caller goes away: a command still waiting then leaves the queue, never run. */
  readonly signal?: AbortSignal | undefined;
  /** Runs before a refusal (a streamed completion deletes the output it uploaded). */
  readonly beforeRefusal?: () => Promise<void>;
}

/** How many commands are in progress, the queue of those waiting, and the refusal of one too many. */
export interface Admission {
  /**
   * Runs `work` as a command in progress: at once while fewer than `maxInProgress` are, or
   * once its turn in the queue comes. It is refused with UNAVAILABLE and a retry delay when the
   * queue is full, or when its expected wait outlasts its deadline; a command whose deadline
   * passes while it waits ends with DEADLINE_EXCEEDED, never having run.
   */
  admit<T>(work: () => Promise<T>, options?: AdmitOptions): Promise<T>;
  /** In progress and waiting, now, and the commands refused so far, by why. */
  load(): AdmissionLoad;
}

export interface AdmissionLoad {
  readonly inProgress: number;
  readonly queued: number;
  /** Refused because the queue was full. */
  readonly shedQueueFull: number;
  /** Refused because they could not start before their deadline (expected, or found waiting). */
  readonly shedDeadline: number;
}

interface Queued {
  readonly deadline: number;
  /**
   * Takes it out of the queue (to start it, or at its deadline, or when its caller goes away):
   * false when it was out already, its place then only skipped.
   */
  take(): boolean;
  start(): void;
  reject(err: Error): void;
}

const waitedPastDeadline = (): DeadlineError =>
  new DeadlineError("the call's deadline passed while the command waited its turn");

// Weight of the newest command's duration in the running mean: heavy enough to follow a
// change of load within a few hundred commands, light enough that one slow command does not
// swing the estimate.
const DURATION_WEIGHT = 0.02;

/**
 * Admission control for commands. A burst larger than the service can take at once waits its
 * turn (first come, first served) instead of being refused: a client that sends 10,000
 * commands at once with a generous deadline gets 10,000 answers. What is refused is refused in
 * microseconds, with a `RetryInfo` saying when a retry is worth it: a command that would find
 * the queue full, or that could not start before its deadline. The expected wait is the queue
 * ahead of it times the mean duration of a command in progress, divided by how many run at once
 * (Little's law); before any command has finished there is no estimate and none is refused
 * for its deadline.
 *
 * A waiting command leaves the queue when its deadline passes or its caller goes away, not
 * only when its turn comes: while it waits, its call is open and its request is counted against
 * MAX_REQUEST_BYTES_IN_FLIGHT (shared/grpc/admission.ts), which bounds the queue's bytes.
 */
export function createAdmission(limits: AdmissionLimits, now: () => number = Date.now): Admission {
  let inProgress = 0;
  // The waiting commands are queue[head..]: taking from the front is O(1), and the array is
  // compacted once the taken part is most of it.
  const queue: Queued[] = [];
  let head = 0;
  // Waiting, not counting those taken out early (still in the array until reached).
  let waiting = 0;
  let meanDurationMs: number | undefined;
  let shedQueueFull = 0;
  let shedDeadline = 0;

  function expectedWaitMs(ahead: number): number | undefined {
    if (meanDurationMs === undefined) return undefined;
    return ((ahead + 1) * meanDurationMs) / limits.maxInProgress;
  }

  function next(): void {
    while (inProgress < limits.maxInProgress && head < queue.length) {
      const next = queue[head]!;
      head += 1;
      if (!next.take()) continue;
      if (next.deadline <= now()) {
        shedDeadline += 1;
        next.reject(waitedPastDeadline());
        continue;
      }
      // Its place is taken now, before it runs on a later tick.
      inProgress += 1;
      next.start();
    }
    if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
  }

  /** Runs `work` in a place already counted in `inProgress`. */
  async function run<T>(work: () => Promise<T>): Promise<T> {
    const started = now();
    try {
      return await work();
    } finally {
      const took = now() - started;
      meanDurationMs = meanDurationMs === undefined ? took : meanDurationMs + DURATION_WEIGHT * (took - meanDurationMs);
      inProgress -= 1;
      next();
    }
  }

  async function refuse(reason: string, retryAfterMs: number, options: AdmitOptions): Promise<never> {
    await options.beforeRefusal?.();
    throw new UnavailableError(`command service overloaded: ${reason}; retry after the delay given`, {
      retryAfterMs,
    });
  }

  return {
    load: () => ({ inProgress, queued: waiting, shedQueueFull, shedDeadline }),
    async admit(work, options = {}) {
      // Checked and counted before the first await, so that commands arriving together cannot
      // all pass the check before any of them is counted.
      if (inProgress < limits.maxInProgress && waiting === 0) {
        inProgress += 1;
        return run(work);
      }
      const ahead = waiting;
      const wait = expectedWaitMs(ahead);
      // A caller already gone was not refused: it left.
      const gone = options.signal?.aborted === true;
      if (ahead >= limits.maxQueued) {
        if (!gone) shedQueueFull += 1;
        return refuse(
          `${inProgress} commands in progress (MAX_PENDING_COMMANDS) and ${ahead} waiting (MAX_QUEUED_COMMANDS)`,
          wait ?? 1000,
          options,
        );
      }
      const deadline = options.deadline?.getTime() ?? Infinity;
      if (wait !== undefined && now() + wait > deadline) {
        if (!gone) shedDeadline += 1;
        return refuse(
          `${ahead} commands are waiting ahead of this one, about ${Math.ceil(wait)} ms, past the call's deadline`,
          wait,
          options,
        );
      }
      const { signal } = options;
      let leave: (() => void) | undefined;
      try {
        if (signal?.aborted === true)
          throw new UnavailableError('the caller went away before the command was admitted');
        await new Promise<void>((start, reject) => {
          let timer: ReturnType<typeof setTimeout> | undefined;
          let out = false;
          const entry: Queued = {
            deadline,
            start,
            reject,
            take() {
              if (out) return false;
              out = true;
              waiting -= 1;
              clearTimeout(timer);
              return true;
            },
          };
          const leaveEarly = (err: Error): void => {
            if (entry.take()) reject(err);
          };
          if (Number.isFinite(deadline)) {
            timer = setTimeout(() => {
              if (entry.take()) {
                shedDeadline += 1;
                reject(waitedPastDeadline());
              }
            }, deadline - now());
            timer.unref();
          }
          if (signal !== undefined) {
            const onAbort = (): void => {
              // grpc-js cancels a call at its deadline, often before our own timer fires: that
              // is a command that could not start in time, not a caller that left.
              if (now() >= deadline && entry.take()) {
                shedDeadline += 1;
                reject(waitedPastDeadline());
                return;
              }
              leaveEarly(new UnavailableError('the caller went away while the command waited its turn'));
            };
            signal.addEventListener('abort', onAbort, { once: true });
            leave = () => signal.removeEventListener('abort', onAbort);
          }
          queue.push(entry);
          waiting += 1;
        });
      } catch (err) {
        await options.beforeRefusal?.();
        throw err;
      } finally {
        leave?.();
      }
      return run(work);
    },
  };
}
