/**
 * One waiter at a time for a loop that sleeps until something happens (an offer, a
 * notification, a stop): `wake` ends the wait in progress, if any; a later wait replaces it.
 */
export interface Waker {
  readonly wake: () => void;
  /** Resolves on the next `wake`. */
  readonly idle: () => Promise<void>;
  /** Resolves true when woken, false when `ms` ran out first. */
  readonly sleep: (ms: number) => Promise<boolean>;
}

export function createWaker(): Waker {
  let wakeUp: (() => void) | undefined;
  return {
    wake: () => {
      const w = wakeUp;
      wakeUp = undefined;
      w?.();
    },
    idle: () =>
      new Promise((resolve) => {
        wakeUp = resolve;
      }),
    sleep: (ms) =>
      new Promise((resolve) => {
        const timer = setTimeout(() => {
          wakeUp = undefined;
          resolve(false);
        }, ms);
        wakeUp = () => {
          clearTimeout(timer);
          resolve(true);
        };
      }),
  };
}
