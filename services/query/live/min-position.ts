import type { CallContext } from '../../../shared/grpc';
import type { ChangeHub } from './change-hub';
import type { OpenCalls } from './open-calls';
import type { ReadGuard } from './read-guard';
import type { Shutdown } from './shutdown';

/**
 * A read's `min_position` wait: refused at once when the read models cannot reach it (stalled),
 * counted among the replica's open calls while it waits, and over as soon as the change-log
 * tail has applied the position (an awaited event, not a poll), the call is cancelled, the
 * deadline passes or the service shuts down.
 */
export async function waitForMinPosition(
  deps: {
    readonly guard: ReadGuard;
    readonly openCalls: OpenCalls;
    readonly hub: ChangeHub;
    readonly shutdown: Shutdown;
  },
  minPosition: bigint,
  context: CallContext,
  what: string,
): Promise<void> {
  deps.guard.checkReachable(minPosition);
  const close = deps.openCalls.open(context.peer, `a ${what} min_position wait`);
  try {
    await deps.hub.waitForPosition(minPosition, {
      signal: context.signal,
      deadline: context.deadline,
      shutdown: deps.shutdown,
    });
  } finally {
    close();
  }
}
