import { UnavailableError } from '../../../shared/errors';
import type { CallContext } from '../../../shared/grpc';
import type { Shutdown } from './shutdown';

/** What the readiness gate needs to know of the projector. */
export interface CatchUpState {
  status(): { readonly caughtUp: boolean; readonly checkpoint: bigint; readonly head: bigint };
  whenCaughtUp(): Promise<void>;
}

export interface Readiness {
  /**
   * Resolves when the read models have caught up with the event log (at once, normally).
   * While a replica is still catching up (start-up, rebuild) a call waits for it within its
   * deadline and at most `maxWaitMs`, then gets UNAVAILABLE: stale reads are never served.
   */
  ready(context: CallContext): Promise<void>;
}

const DEADLINE_MARGIN_MS = 50;

export function createReadiness(projector: CatchUpState, shutdown: Shutdown, maxWaitMs = 5000): Readiness {
  return {
    async ready(context) {
      if (projector.status().caughtUp) return;
      // Give up a little before the deadline, so the caller gets this UNAVAILABLE (retryable,
      // with the reason) rather than a bare DEADLINE_EXCEEDED.
      const untilDeadline =
        context.deadline === undefined ? maxWaitMs : context.deadline.getTime() - Date.now() - DEADLINE_MARGIN_MS;
      const limit = Math.min(maxWaitMs, untilDeadline);
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      let unsubscribe = (): void => undefined;
      const outcome = await Promise.race([
        projector.whenCaughtUp().then(() => 'ready' as const),
        new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), Math.max(0, limit));
        }),
        new Promise<'aborted'>((resolve) => {
          onAbort = () => resolve('aborted');
          context.signal.addEventListener('abort', onAbort);
          unsubscribe = shutdown.subscribe(onAbort);
        }),
      ]);
      clearTimeout(timer);
      if (onAbort !== undefined) {
        context.signal.removeEventListener('abort', onAbort);
        unsubscribe();
      }
      if (outcome === 'ready') return;
      const { checkpoint, head } = projector.status();
      throw new UnavailableError(
        `the read models are still catching up with the event log (at position ${checkpoint} of ${head}); retry shortly`,
      );
    },
  };
}
