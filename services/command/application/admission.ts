import { UnavailableError } from '../../../shared/errors';

/** How many commands are in progress, and the refusal of one too many. */
export interface Admission {
  /**
   * Runs `work` as a command in progress, or refuses it at once with UNAVAILABLE when
   * `maxPending` are in progress already (running `beforeRefusal` first). The slot is freed
   * when `work` settles, whether it succeeds or throws.
   */
  admit<T>(work: () => Promise<T>, beforeRefusal?: () => Promise<void>): Promise<T>;
}

/**
 * Counts the commands in progress (waiting for PostgreSQL included) and refuses more than
 * `maxPending` at once: under overload, a caller hears it in microseconds, not when a pool wait
 * times out seconds later, and the accepted commands keep their latency.
 */
export function createAdmission(maxPending: number): Admission {
  let pending = 0;
  return {
    async admit(work, beforeRefusal) {
      // Checked and counted before the first await, so that commands arriving together cannot
      // all pass the check before any of them is counted.
      if (pending >= maxPending) {
        await beforeRefusal?.();
        throw new UnavailableError(
          `command service overloaded: ${pending} commands in progress (MAX_PENDING_COMMANDS); retry with backoff`,
        );
      }
      pending += 1;
      try {
        return await work();
      } finally {
        pending -= 1;
      }
    },
  };
}
