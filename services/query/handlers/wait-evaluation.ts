import { isTerminalProto } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import type { CallContext } from '../../../shared/grpc';
import type { WaitEvaluationRequest } from '../../../shared/generated/crucible/storage/v1/query_service';
import { RequestChecks } from '../domain/requests';
import type { Change } from '../live/change';
import type { ChangeHub } from '../live/change-hub';
import type { OpenCalls } from '../live/open-calls';
import type { ReadGuard } from '../live/read-guard';
import type { Readiness } from '../live/readiness';
import type { Shutdown } from '../live/shutdown';
import type { RetiredEvaluations } from '../archive/retired-evaluations';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import { readEvaluation } from '../live/evaluation-read';
import type { WaitEvaluationOut } from '../wire/encoded-messages';

/**
 * How long a call without a deadline waits before it answers the current state: such a client
 * still gets an answer in bounded time (and asks again), and the replica its open call back,
 * instead of holding both for as long as the evaluation runs (up to MAX_TIMEOUT_SECONDS, or for
 * ever when its executor vanished).
 */
export const MAX_WAIT_MS = 5 * 60 * 1000;
/** The answer leaves at most this long before the deadline… */
const MAX_MARGIN_MS = 1000;
/** …and at most this share of the time the call had left when it arrived. */
const MARGIN_SHARE = 0.1;
/** setTimeout's largest delay (a longer one fires at once). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * When a wait that starts at `now` (ms) answers the current state of an evaluation that has not
 * ended: before the deadline by the smaller of 1 s and 10% of the time left — room for the
 * answer to reach the client, which would otherwise hear DEADLINE_EXCEEDED instead of the state
 * — or `maxWaitMs` after `now` when the call has no deadline. A deadline already past is now.
 */
export function answerAt(deadline: Date | undefined, now: number, maxWaitMs = MAX_WAIT_MS): number {
  if (deadline === undefined) return now + maxWaitMs;
  const end = deadline.getTime();
  return Math.max(now, end - Math.min(MAX_MARGIN_MS, Math.max(0, end - now) * MARGIN_SHARE));
}

/**
 * Why a wait stops waiting: its evaluation changed (read it again), the time to answer came,
 * the client went away, the server is shutting down.
 */
export type WakeUp = 'changed' | 'due' | 'cancelled' | 'shutdown';

/** Wake-ups that end the wait, most pressing first. */
const ENDINGS = ['shutdown', 'cancelled', 'due'] as const;
type Ending = (typeof ENDINGS)[number];

/** What wakes one WaitEvaluation up, registered once for the whole call. */
export interface WakeUps {
  /**
   * The most pressing ending that came (it stays), else 'changed' when the evaluation changed
   * since the last takeChanged(); waits for either. An awaited event, never a poll.
   */
  next(): Promise<WakeUp>;
  /** Whether the evaluation changed since the last call: a read after it sees those changes. */
  takeChanged(): boolean;
  /** Removes the hub listener, the shutdown and cancel listeners and the timer (idempotent). */
  close(): void;
}

/**
 * Subscribes to what ends a wait: the hub's changes of `evalId` (a listener only sets a flag, so
 * the changes that land during a read cost one more read, not one each), the client's cancel,
 * the shutdown, and a timer for `at`; `also` adds another source of changes and a filter of the
 * hub's (ReadLogs). Subscribed before the record is read, so that no change can fall between
 * the read and the subscription.
 */
export function listenForWakeUps(
  deps: { readonly hub: ChangeHub; readonly shutdown: Shutdown },
  evalId: string,
  signal: AbortSignal,
  at: number,
  now: () => number,
  also: {
    /** Subscribes another source of changes (ReadLogs: live/log-hints.ts); returns the unsubscribe. */
    readonly on?: (changed: () => void) => () => void;
    /** Whether a hub change is one to read again for (default: every change is). */
    readonly wants?: (change: Change) => boolean;
  } = {},
): WakeUps {
  let changed = false;
  let ended: Ending | undefined;
  let wake: (() => void) | undefined;
  const raise = (): void => {
    const waiting = wake;
    wake = undefined;
    waiting?.();
  };
  const end = (why: Ending): void => {
    if (ended === undefined || ENDINGS.indexOf(why) < ENDINGS.indexOf(ended)) ended = why;
    raise();
  };
  const onCancel = (): void => end('cancelled');
  const onChanged = (): void => {
    changed = true;
    raise();
  };
  const { wants } = also;
  const unsubscribeChanges = deps.hub.onEvaluation(
    evalId,
    wants === undefined ? onChanged : (change) => (wants(change) ? onChanged() : undefined),
  );
  const unsubscribeAlso = also.on?.(onChanged);
  const unsubscribeShutdown = deps.shutdown.subscribe(() => end('shutdown'));
  signal.addEventListener('abort', onCancel);
  const timer = setTimeout(() => end('due'), Math.min(MAX_TIMER_MS, Math.max(0, at - now())));
  if (signal.aborted) end('cancelled');
  if (deps.shutdown.aborted) end('shutdown');
  return {
    async next() {
      while (ended === undefined && !changed) await new Promise<void>((resolve) => (wake = resolve));
      return ended ?? 'changed';
    },
    takeChanged() {
      const was = changed;
      changed = false;
      return was;
    },
    close() {
      clearTimeout(timer);
      signal.removeEventListener('abort', onCancel);
      unsubscribeShutdown();
      unsubscribeChanges();
      unsubscribeAlso?.();
    },
  };
}

/**
 * WaitEvaluation: a unary long poll. Answers at once, as GetEvaluation reads it, an evaluation
 * that has ended; otherwise waits for its changes (the hub's, an awaited event) until one ends
 * it, and answers its current state with `terminal` false shortly before the deadline
 * ({@link answerAt}). NOT_FOUND when unknown; UNAVAILABLE when the server shuts down meanwhile.
 *
 * Only the wait counts among the replica's open calls (RESOURCE_EXHAUSTED past the caps), as a
 * `min_position` wait does: a client asking for evaluations that have ended holds nothing and
 * is never refused for what other calls hold. The record is read again after every wake-up: the
 * hub says that something changed, the record is what did.
 */
export function createWaitEvaluation(deps: {
  readonly records: EvaluationRecords;
  readonly retired: RetiredEvaluations;
  readonly guard: ReadGuard;
  readonly openCalls: OpenCalls;
  readonly hub: ChangeHub;
  readonly readiness: Readiness;
  readonly shutdown: Shutdown;
  readonly clock?: () => number;
  /** The wait of a call without a deadline (MAX_WAIT_MS). */
  readonly maxWaitMs?: number;
}) {
  const clock = deps.clock ?? Date.now;
  return async function waitEvaluation(
    request: WaitEvaluationRequest,
    context: CallContext,
  ): Promise<WaitEvaluationOut> {
    const checks = new RequestChecks();
    const evalId = checks.evalId(request.evalId);
    checks.done();

    await deps.readiness.ready(context);
    const at = answerAt(context.deadline, clock(), deps.maxWaitMs);
    const { tenant } = context.caller;
    const current = await readEvaluation(deps, evalId, tenant);
    if (isTerminalProto(current.message.status)) return { evaluation: current, terminal: true };
    const close = deps.openCalls.open(context.peer, 'a WaitEvaluation wait');
    try {
      return await waitForEnd(evalId, tenant, at, context.signal);
    } finally {
      close();
    }
  };

  async function waitForEnd(
    evalId: string,
    tenant: string,
    at: number,
    signal: AbortSignal,
  ): Promise<WaitEvaluationOut> {
    const wakeUps = listenForWakeUps(deps, evalId, signal, at, clock);
    try {
      for (;;) {
        wakeUps.takeChanged();
        const record = await readEvaluation(deps, evalId, tenant);
        if (isTerminalProto(record.message.status)) return { evaluation: record, terminal: true };
        switch (await wakeUps.next()) {
          case 'changed':
            continue;
          case 'due': {
            // One more read when a change came meanwhile (not one per change: under a stream of
            // changes the answer must still leave in time).
            const latest = wakeUps.takeChanged() ? await readEvaluation(deps, evalId, tenant) : record;
            return { evaluation: latest, terminal: isTerminalProto(latest.message.status) };
          }
          case 'cancelled':
            // Nobody hears the answer; the call is over.
            return { evaluation: record, terminal: false };
          case 'shutdown':
            throw new UnavailableError(`server shutting down; retry (evaluation ${evalId} had not ended)`);
        }
      }
    } finally {
      wakeUps.close();
    }
  }
}
