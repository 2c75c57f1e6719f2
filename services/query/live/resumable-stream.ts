import { CrucibleError, UnavailableError } from '../../../shared/errors';
import type { Shutdown } from './shutdown';
import { createWaker, type Waker } from './waker';

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
  const { matches, isFinal } = options;
  const waker = createWaker();
  const live = createLiveBuffer<T>({
    cursorOf: options.cursorOf,
    keeps: (item) => matches(item) || isFinal(item),
    limit: options.bufferLimit,
    offeredThrough: options.offeredThrough,
    catchUpFirst: options.replayFirst,
    onFallback: options.onFallback,
  });
  const seam: Seam<T> = { options, live, waker, sent: options.start, caughtUpSent: false };
  return new StreamOverSeam(seam);
}

// A class, not an object literal with accessors, for the same reason as HeldLiveItems.
class StreamOverSeam<T> implements ResumableStream<T> {
  constructor(private readonly seam: Seam<T>) {}

  get reached(): bigint {
    return reachedOf(this.seam);
  }

  get buffered(): number {
    return this.seam.live.size;
  }

  offer(item: T): void {
    // A repeat is no news: only a new cursor wakes the run loop.
    if (this.seam.live.offer(item)) this.seam.waker.wake();
  }

  run(): Promise<void> {
    return runSeam(this.seam);
  }
}

/** The run loop of a stream (see createResumableStream). */
async function runSeam<T>(seam: Seam<T>): Promise<void> {
  const { options, live, waker } = seam;
  const { matches, isFinal, output, signal, shutdown } = options;
  const stopListening = listenForStop(signal, shutdown, waker.wake);
  const progress = startProgressClock(options.progressIntervalMs, waker.wake);
  try {
    if (!live.mustCatchUp) {
      seam.caughtUpSent = true;
      await output.caughtUp(caughtUpPositionOf(options, seam.sent));
    }
    for (;;) {
      if (signal.aborted) return;
      if (shutdown.aborted) {
        throw new UnavailableError(`server shutting down; resume from ${options.describe(reachedOf(seam))}`);
      }
      if (progress.takeDue()) {
        const at = reachedOf(seam);
        await output.progress(options.progressPosition?.(at) ?? at);
        continue;
      }
      if (live.mustCatchUp) {
        if ((await catchUp(seam)) === 'ended') return;
        continue;
      }
      // Live send, inline: an async helper would add turns between a send and the next
      // check, and offers landing in them could change when the buffer overflows.
      const item = live.shift();
      if (item !== undefined) {
        if (advancePast(seam, item) && matches(item)) await output.update(item);
        if (isFinal(item)) return;
        continue;
      }
      // Everything offered was sent or filtered out: the client has reached it.
      const through = live.lastOffered;
      if (through !== undefined && through > seam.sent) seam.sent = through;
      await waker.idle();
    }
  } finally {
    progress.stop();
    stopListening();
  }
}

/** The state the steps of one stream share: its options, its live buffer and what was sent. */
interface Seam<T> {
  readonly options: ResumableStreamOptions<T>;
  readonly live: LiveBuffer<T>;
  readonly waker: Waker;
  /** The client has every item up to this cursor (sent, or filtered out). */
  sent: bigint;
  /** The caught-up marker goes out once per stream. */
  caughtUpSent: boolean;
}

const reachedOf = <T>(seam: Seam<T>): bigint => seam.live.reached(seam.sent);

const stopped = <T>({ options }: Seam<T>): boolean => options.signal.aborted || options.shutdown.aborted;

const caughtUpPositionOf = <T>(options: ResumableStreamOptions<T>, cursor: bigint): bigint =>
  options.caughtUpPosition?.(cursor) ?? cursor;

/**
 * Moves the sent cursor to `item`'s when the client does not have it yet; false when it does
 * (the other side of the seam already sent it), so the caller sends it only when true.
 */
function advancePast<T>(seam: Seam<T>, item: T): boolean {
  const cursor = seam.options.cursorOf(item);
  if (cursor <= seam.sent) return false;
  seam.sent = cursor;
  return true;
}

/**
 * Step 1 of the seam (see createResumableStream): drops the live buffer, reads the stored items
 * after the sent cursor and sends them, then either sends the caught-up marker or asks for another
 * catch-up. 'ended' when a final item was replayed.
 */
async function catchUp<T>(seam: Seam<T>): Promise<'ended' | 'continue'> {
  const { options, live } = seam;
  const { output } = options;
  const r0 = live.beginCatchUp();
  let read: { items: T[]; complete: boolean };
  try {
    read = await options.readAfter(seam.sent);
  } catch (err) {
    throw readFailure(seam, err);
  }
  let final = false;
  for (const item of read.items) {
    if (stopped(seam)) return 'continue';
    if (advancePast(seam, item) && options.matches(item)) await output.update(item);
    if (options.isFinal(item)) {
      final = true;
      break;
    }
  }
  if (final) {
    if (!seam.caughtUpSent && !stopped(seam)) await output.caughtUp(caughtUpPositionOf(options, seam.sent));
    return 'ended';
  }
  if (mustReadAgain(read.complete, r0, seam.sent)) {
    live.requireCatchUp();
    if (read.items.length === 0) await seam.waker.idle(); // nothing readable yet (e.g. a rebuild): wait for news
  } else if (!seam.caughtUpSent) {
    seam.caughtUpSent = true;
    await output.caughtUp(caughtUpPositionOf(options, seam.sent));
  }
  return 'continue';
}

/**
 * Whether a catch-up must read again: the store holds more than the read returned, or the read
 * stopped short of `liveAt`, the cursor live items had reached when the buffer was dropped (items
 * up to it were offered before the drop, so only the store has them).
 */
export function mustReadAgain(complete: boolean, liveAt: bigint | undefined, sent: bigint): boolean {
  return !complete || (liveAt !== undefined && sent < liveAt);
}

/** A typed error passes through (OutOfRange…); anything else is the store being unavailable. */
function readFailure<T>(seam: Seam<T>, err: unknown): Error {
  if (err instanceof CrucibleError) return err;
  return new UnavailableError(`read models unavailable; resume from ${seam.options.describe(reachedOf(seam))}`, {
    cause: err,
  });
}

export interface LiveBufferOptions<T> {
  readonly cursorOf: (item: T) => bigint;
  /** Whether a live item is worth holding (the client wants it, or it ends the stream). */
  readonly keeps: (item: T) => boolean;
  /** Items held at most; one more drops the buffer. */
  readonly limit: number;
  /** The cursor live items have already reached (see ResumableStreamOptions.offeredThrough). */
  readonly offeredThrough: bigint | undefined;
  /** Start in catch-up (replay first): hold nothing until the first catch-up begins. */
  readonly catchUpFirst: boolean;
  readonly onFallback?: () => void;
}

/**
 * The live side of the seam: items offered since the last catch-up began, in cursor order, at
 * most `limit` of them. A jump in offered cursors or one item too many drops the buffer and asks
 * for a catch-up (the store has every dropped item); while one is due, offers only move the
 * offered cursor.
 */
export interface LiveBuffer<T> {
  /** Takes a live item; false (and nothing changes) when its cursor was offered already. */
  offer(item: T): boolean;
  /** Drops the buffer as a catch-up begins; returns how far live items had come (r0). */
  beginCatchUp(): bigint | undefined;
  /** The catch-up has to run again; what was buffered since it began stays until it does. */
  requireCatchUp(): void;
  /** The oldest held item, removed. */
  shift(): T | undefined;
  /** How far a client that has everything up to `sent` has got, counting filtered-out live items. */
  reached(sent: bigint): bigint;
  readonly mustCatchUp: boolean;
  /** The highest cursor offered (or `offeredThrough`). */
  readonly lastOffered: bigint | undefined;
  readonly size: number;
}

export function createLiveBuffer<T>(options: LiveBufferOptions<T>): LiveBuffer<T> {
  return new HeldLiveItems(options);
}

// A class, not an object literal of closures: one of these lives as long as its stream, and a
// literal with accessors is kept by V8 as a dictionary (about 0.4 KiB more per stream).
class HeldLiveItems<T> implements LiveBuffer<T> {
  private items: T[] = [];
  private offered: bigint | undefined;
  private catchUpDue: boolean;

  constructor(private readonly options: LiveBufferOptions<T>) {
    this.offered = options.offeredThrough;
    this.catchUpDue = options.catchUpFirst;
  }

  offer(item: T): boolean {
    const cursor = this.options.cursorOf(item);
    if (this.offered !== undefined) {
      if (cursor <= this.offered) return false;
      // Live items must follow one another; a jump means the feed skipped something.
      if (cursor !== this.offered + 1n) this.fallBack();
    }
    this.offered = cursor;
    if (!this.catchUpDue && this.options.keeps(item)) {
      this.items.push(item);
      if (this.items.length > this.options.limit) this.fallBack();
    }
    return true;
  }

  beginCatchUp(): bigint | undefined {
    this.catchUpDue = false;
    this.items = [];
    return this.offered;
  }

  requireCatchUp(): void {
    this.catchUpDue = true;
  }

  shift(): T | undefined {
    return this.items.shift();
  }

  // Nothing held and nothing to re-read: every offered item up to lastOffered was sent or
  // filtered out.
  reached(sent: bigint): bigint {
    const { offered } = this;
    return this.items.length === 0 && !this.catchUpDue && offered !== undefined && offered > sent ? offered : sent;
  }

  get mustCatchUp(): boolean {
    return this.catchUpDue;
  }

  get lastOffered(): bigint | undefined {
    return this.offered;
  }

  get size(): number {
    return this.items.length;
  }

  private fallBack(): void {
    this.items = [];
    this.catchUpDue = true;
    this.options.onFallback?.();
  }
}

/** Wakes the run loop when the client cancels or the server shuts down; returns the undo. */
function listenForStop(signal: AbortSignal, shutdown: Shutdown, wake: () => void): () => void {
  const onAbort = (): void => wake();
  signal.addEventListener('abort', onAbort);
  const unsubscribe = shutdown.subscribe(onAbort);
  return () => {
    signal.removeEventListener('abort', onAbort);
    unsubscribe();
  };
}

/** A progress message falls due every `intervalMs`; the run loop takes it between sends. */
function startProgressClock(intervalMs: number, wake: () => void): { takeDue(): boolean; stop(): void } {
  let due = false;
  const timer = setInterval(() => {
    due = true;
    wake();
  }, intervalMs);
  return {
    takeDue() {
      if (!due) return false;
      due = false;
      return true;
    },
    stop() {
      clearInterval(timer);
    },
  };
}
