import { CrucibleError, UnavailableError } from '../../../shared/errors';
import type { Shutdown } from './shutdown';

/** Where a resumable stream sends what it has to say (the handler builds the messages). */
export interface StreamOutput<T> {
  readonly update: (item: T) => Promise<void>;
  readonly caughtUp: (cursor: bigint) => Promise<void>;
  readonly progress: (cursor: bigint) => Promise<void>;
}

export interface ResumableStreamOptions<T> {
  /** Cursor (position or revision) the client already has: replay starts after it. */
  readonly start: bigint;
  /** Read stored items after `start` before going live (false: live from `start` on). */
  readonly replayFirst: boolean;
  /**
   * The cursor live items have already reached when the listener is registered (a firehose:
   * the hub's applied position; the next offer must follow it). Undefined when unknown.
   */
  readonly offeredThrough: bigint | undefined;
  readonly cursorOf: (item: T) => bigint;
  /** Whether the client wants the item; others still move the cursor. */
  readonly matches: (item: T) => boolean;
  /** The stream ends after this item (a terminal state). */
  readonly isFinal: (item: T) => boolean;
  /**
   * Stored items after `cursor`, consecutive, oldest first. `complete` when nothing more is
   * stored right now. May throw OutOfRangeError.
   */
  readonly readAfter: (cursor: bigint) => Promise<{ items: T[]; complete: boolean }>;
  readonly output: StreamOutput<T>;
  /** Live items held for a slow client before the stream drops them and re-reads instead. */
  readonly bufferLimit: number;
  readonly progressIntervalMs: number;
  /** The position progress messages carry; defaults to the stream's reached cursor. */
  readonly progressPosition?: (reached: bigint) => bigint;
  /** The position the caught-up marker carries; defaults to the reached cursor. */
  readonly caughtUpPosition?: (reached: bigint) => bigint;
  /** "position 42", "revision 3": how the UNAVAILABLE message names the resume point. */
  readonly describe: (cursor: bigint) => string;
  /** The client went away. */
  readonly signal: AbortSignal;
  /** The server is shutting down. */
  readonly shutdown: Shutdown;
  /** Told when a slow client's buffer is dropped (tests, logs). */
  readonly onFallback?: () => void;
}

export interface ResumableStream<T> {
  /** Hands over a live item, in cursor order; never blocks and never buffers without bound. */
  offer(item: T): void;
  /**
   * Replays, marks caught up, then streams live items until the client cancels or a final
   * item was sent (resolves), or the server shuts down (UnavailableError naming the resume
   * point).
   */
  run(): Promise<void>;
  /** Everything up to this cursor was sent or filtered out. */
  readonly reached: bigint;
  /** Live items held right now (at most bufferLimit). */
  readonly buffered: number;
}

/**
 * The replay → live seam of a resumable stream, without gaps or duplicates, with bounded
 * memory. The caller registers the live listener (which calls `offer`) before `run`; then:
 *
 * 1. Catch-up: drop the live buffer, remember how far live items had come (r0), read stored
 *    items after the last sent cursor and send them. Every item offered before the drop is
 *    already stored (the tail dispatches only what is applied), so the read covers it; every
 *    item offered after the drop is in the buffer. Repeat until the read is complete and has
 *    reached r0, then send the caught-up marker once.
 * 2. Live: send buffered items above the last sent cursor, in order.
 * 3. A slow client (buffer over the limit) or a jump in offered cursors drops the buffer and
 *    goes back to 1, so the server holds at most `bufferLimit` items per stream and the
 *    client still gets every item once, in order.
 */
export function createResumableStream<T>(options: ResumableStreamOptions<T>): ResumableStream<T> {
  const { cursorOf, matches, isFinal, output, signal, shutdown } = options;
  let sent = options.start;
  let lastOffered = options.offeredThrough;
  let buffer: T[] = [];
  let mustCatchUp = options.replayFirst;
  let caughtUpSent = false;
  let progressDue = false;
  let wakeUp: (() => void) | undefined;

  const wake = (): void => {
    const w = wakeUp;
    wakeUp = undefined;
    w?.();
  };
  const reached = (): bigint =>
    buffer.length === 0 && !mustCatchUp && lastOffered !== undefined && lastOffered > sent ? lastOffered : sent;
  const stopped = (): boolean => signal.aborted || shutdown.aborted;

  const fallBack = (): void => {
    buffer = [];
    mustCatchUp = true;
    options.onFallback?.();
  };

  async function catchUp(): Promise<'ended' | 'continue'> {
    mustCatchUp = false;
    buffer = [];
    const r0 = lastOffered;
    let read: { items: T[]; complete: boolean };
    try {
      read = await options.readAfter(sent);
    } catch (err) {
      if (err instanceof CrucibleError) throw err;
      throw new UnavailableError(`read models unavailable; resume from ${options.describe(reached())}`, { cause: err });
    }
    let final = false;
    for (const item of read.items) {
      if (stopped()) return 'continue';
      const cursor = cursorOf(item);
      if (cursor > sent) {
        sent = cursor;
        if (matches(item)) await output.update(item);
      }
      if (isFinal(item)) {
        final = true;
        break;
      }
    }
    if (final) {
      if (!caughtUpSent && !stopped()) await output.caughtUp(caughtUpPositionOf(sent));
      return 'ended';
    }
    if (!read.complete || (r0 !== undefined && sent < r0)) {
      mustCatchUp = true;
      if (read.items.length === 0) await idle(); // nothing readable yet (e.g. a rebuild): wait for news
    } else if (!caughtUpSent) {
      caughtUpSent = true;
      await output.caughtUp(caughtUpPositionOf(sent));
    }
    return 'continue';
  }

  const caughtUpPositionOf = (cursor: bigint): bigint => options.caughtUpPosition?.(cursor) ?? cursor;

  const idle = (): Promise<void> =>
    new Promise((resolve) => {
      wakeUp = resolve;
    });

  return {
    get reached() {
      return reached();
    },
    get buffered() {
      return buffer.length;
    },
    offer(item) {
      const cursor = cursorOf(item);
      if (lastOffered !== undefined) {
        if (cursor <= lastOffered) return;
        // Live items must follow one another; a jump means the feed skipped something.
        if (cursor !== lastOffered + 1n) fallBack();
      }
      lastOffered = cursor;
      if (!mustCatchUp && (matches(item) || isFinal(item))) {
        buffer.push(item);
        if (buffer.length > options.bufferLimit) fallBack();
      }
      wake();
    },
    async run() {
      const onAbort = (): void => wake();
      signal.addEventListener('abort', onAbort);
      const unsubscribe = shutdown.subscribe(onAbort);
      const timer = setInterval(() => {
        progressDue = true;
        wake();
      }, options.progressIntervalMs);
      try {
        if (!mustCatchUp) {
          caughtUpSent = true;
          await output.caughtUp(caughtUpPositionOf(sent));
        }
        for (;;) {
          if (signal.aborted) return;
          if (shutdown.aborted) {
            throw new UnavailableError(`server shutting down; resume from ${options.describe(reached())}`);
          }
          if (progressDue) {
            progressDue = false;
            const at = reached();
            await output.progress(options.progressPosition?.(at) ?? at);
            continue;
          }
          if (mustCatchUp) {
            if ((await catchUp()) === 'ended') return;
            continue;
          }
          const item = buffer.shift();
          if (item !== undefined) {
            const cursor = cursorOf(item);
            if (cursor <= sent) {
              if (isFinal(item)) return;
              continue;
            }
            sent = cursor;
            if (matches(item)) await output.update(item);
            if (isFinal(item)) return;
            continue;
          }
          if (lastOffered !== undefined && lastOffered > sent) sent = lastOffered;
          await idle();
        }
      } finally {
        clearInterval(timer);
        signal.removeEventListener('abort', onAbort);
        unsubscribe();
      }
    },
  };
}
