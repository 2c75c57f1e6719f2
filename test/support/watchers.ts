import { status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import type { EvaluationUpdate } from '../../shared/generated/crucible/storage/v1/evaluation';
import type {
  EvaluationQueryServiceClient,
  WatchEvaluationResponse,
  WatchEvaluationsRequest,
  WatchEvaluationsResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { expectSameAsLog, type LoggedEvent } from './event-log';

/**
 * Watchers that record everything they receive (WatchEvaluations, WatchEvaluation), to be
 * compared with the event log, and waits on what they saw that are woken by the stream itself.
 */

interface Waiter {
  readonly ready: () => boolean;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/**
 * Streams still open. A grpc-js client's close() lets ongoing calls finish, so a stream left
 * open by a failed test would keep mocha's process alive for good: after hooks cancel them all.
 */
const openStreams = new Set<{ cancel(): void }>();

export function track(stream: ClientReadableStream<unknown>): void {
  openStreams.add(stream);
  const forget = (): void => void openStreams.delete(stream);
  stream.once('error', forget);
  stream.once('end', forget);
  stream.once('close', forget);
}

/** Cancels every stream a recorder opened and that is still open (for after hooks). */
export function cancelOpenStreams(): void {
  for (const stream of [...openStreams]) stream.cancel();
  openStreams.clear();
}

/** Waiters on a condition over what a recorder saw, woken by `notify` (no polling). */
export class Recorder {
  private readonly waiters: Waiter[] = [];
  ended: ServiceError | 'ok' | undefined;

  notify(): void {
    for (const waiter of [...this.waiters]) {
      if (waiter.ready()) {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  }

  end(result: ServiceError | 'ok'): void {
    this.ended = result;
    this.notify();
    for (const waiter of this.waiters.splice(0)) {
      waiter.reject(
        new Error(`the stream ended (${result === 'ok' ? 'OK' : `${status[result.code]}: ${result.details}`}) first`),
      );
    }
  }

  /**
   * Ends the recorder when `stream` ends; resolves with how it ended (never rejects). 'end' can
   * precede the status; an error (if any) arrives as 'error' instead.
   */
  follow(stream: ClientReadableStream<unknown>): Promise<ServiceError | 'ok'> {
    return new Promise((resolve) => {
      stream.on('error', (err: ServiceError) => {
        this.end(err);
        resolve(err);
      });
      stream.on('end', () => {
        setImmediate(() => {
          if (this.ended === undefined) {
            this.end('ok');
            resolve('ok');
          }
        });
      });
    });
  }

  waitFor(what: string, ready: () => boolean, timeoutMs: number): Promise<void> {
    if (ready()) return Promise.resolve();
    if (this.ended !== undefined) return Promise.reject(new Error(`the stream ended before ${what}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`));
      }, timeoutMs);
      const waiter: Waiter = {
        ready,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.waiters.push(waiter);
    });
  }
}

export interface StreamRecord {
  /** Updates in the order received. */
  readonly updates: EvaluationUpdate[];
  /** How the stream ended: undefined while open, 'ok' for a clean end, or the error. */
  readonly ended: ServiceError | 'ok' | undefined;
  /** Resolves when the stream ended (never rejects). */
  readonly finished: Promise<ServiceError | 'ok'>;
  readonly call: ClientReadableStream<unknown>;
  cancel(): void;
}

export interface FirehoseRecord extends StreamRecord {
  readonly request: Partial<WatchEvaluationsRequest>;
  /** The highest position an update, progress or caught-up message carried (resume point). */
  readonly reached: bigint;
  readonly caughtUpAt: bigint | undefined;
  whenReached(position: bigint, timeoutMs?: number): Promise<void>;
  whenCaughtUp(timeoutMs?: number): Promise<void>;
}

export function recordFirehose(
  query: EvaluationQueryServiceClient,
  request: Partial<WatchEvaluationsRequest>,
): FirehoseRecord {
  const stream = query.watchEvaluations({ statuses: [], evalIds: [], ...request });
  track(stream);
  const recorder = new Recorder();
  const updates: EvaluationUpdate[] = [];
  let reached = BigInt(request.afterPosition ?? '0');
  let caughtUpAt: bigint | undefined;
  const see = (position: string | undefined): void => {
    if (position !== undefined && BigInt(position) > reached) reached = BigInt(position);
  };
  stream.on('data', (message: WatchEvaluationsResponse) => {
    if (message.update !== undefined) {
      updates.push(message.update);
      see(message.update.position);
    } else if (message.progress !== undefined) {
      see(message.progress.position);
    } else if (message.caughtUp !== undefined) {
      caughtUpAt ??= BigInt(message.caughtUp.position);
      see(message.caughtUp.position);
    }
    recorder.notify();
  });
  const finished = recorder.follow(stream);
  return {
    request,
    updates,
    get ended() {
      return recorder.ended;
    },
    finished,
    call: stream,
    cancel: () => stream.cancel(),
    get reached() {
      return reached;
    },
    get caughtUpAt() {
      return caughtUpAt;
    },
    whenReached: (position, timeoutMs = 30_000) =>
      recorder.waitFor(`position ${position} (reached ${reached})`, () => reached >= position, timeoutMs),
    whenCaughtUp: (timeoutMs = 30_000) =>
      recorder.waitFor('the caught-up marker', () => caughtUpAt !== undefined, timeoutMs),
  };
}

export interface EvaluationWatchRecord extends StreamRecord {
  /** The highest revision received. */
  readonly lastRevision: bigint;
  whenRevision(revision: bigint, timeoutMs?: number): Promise<void>;
}

export function recordEvaluationWatch(
  query: EvaluationQueryServiceClient,
  evalId: string,
  afterRevision?: bigint,
): EvaluationWatchRecord {
  const stream = query.watchEvaluation({
    evalId,
    ...(afterRevision !== undefined ? { afterRevision: afterRevision.toString() } : {}),
  });
  track(stream);
  const recorder = new Recorder();
  const updates: EvaluationUpdate[] = [];
  let lastRevision = afterRevision ?? 0n;
  stream.on('data', (message: WatchEvaluationResponse) => {
    if (message.update !== undefined) {
      updates.push(message.update);
      if (BigInt(message.update.revision) > lastRevision) lastRevision = BigInt(message.update.revision);
    }
    recorder.notify();
  });
  const finished = recorder.follow(stream);
  return {
    updates,
    get ended() {
      return recorder.ended;
    },
    finished,
    call: stream,
    cancel: () => stream.cancel(),
    get lastRevision() {
      return lastRevision;
    },
    whenRevision: (revision, timeoutMs = 30_000) =>
      recorder.waitFor(
        `revision ${revision} of ${evalId} (last ${lastRevision})`,
        () => lastRevision >= revision,
        timeoutMs,
      ),
  };
}

/** Statuses a firehose client resumes on (from its last position). */
const RESUMABLE = ['UNAVAILABLE', 'RESOURCE_EXHAUSTED'];

/**
 * Everything a firehose client gets up to `head`, as a client that resumes would: when the
 * stream ends with a resumable status it opens a new one after the last position it reached
 * (at most `maxResumes` times). Fails on any other end. Returns the updates and how many
 * times it resumed.
 */
export async function readFirehoseThrough(
  query: EvaluationQueryServiceClient,
  first: FirehoseRecord,
  head: bigint,
  maxResumes = 5,
  timeoutMs = 60_000,
): Promise<{ updates: EvaluationUpdate[]; resumes: number }> {
  const updates: EvaluationUpdate[] = [];
  let record = first;
  for (let resumes = 0; ; resumes += 1) {
    const outcome = await Promise.race([
      record.whenReached(head, timeoutMs).then(() => 'reached' as const),
      record.finished,
    ]);
    updates.push(...record.updates);
    if (outcome === 'reached') {
      record.cancel();
      return { updates, resumes };
    }
    const code = outcome === 'ok' ? 'OK' : (status[outcome.code] ?? String(outcome.code));
    expect(code, `the firehose ended before position ${head} (reached ${record.reached})`).to.be.oneOf(RESUMABLE);
    expect(resumes, 'resumes').to.be.lessThan(maxResumes);
    record = recordFirehose(query, { ...first.request, afterPosition: record.reached.toString() });
  }
}

/** Resumes a ResumingWatcher takes before it gives up (and fails whoever waits on it). */
const MAX_RESUMES = 100;

/**
 * A watcher of every change that resumes after the last position it saw whenever its stream
 * ends, as a client of the firehose does (through topology changes, say), waiting a little
 * longer after each end in a row that brought nothing.
 */
export class ResumingWatcher {
  /** How each of its streams ended: "UNAVAILABLE: …". */
  readonly endings: string[] = [];
  /** The position it started after: the one asked for, or its first caught-up marker's. */
  from: bigint | undefined;
  /** Updates of the streams that ended, and the highest position they reached. */
  private readonly earlier: EvaluationUpdate[] = [];
  private reachedEarlier: bigint;
  private current: FirehoseRecord | undefined;
  private stopped = false;
  private failure: Error | undefined;
  private inARow = 0;
  private readonly waiters = new Set<{ ready: () => boolean; resolve: () => void; reject: (e: Error) => void }>();

  constructor(
    private readonly query: EvaluationQueryServiceClient,
    readonly name: string,
    after: bigint | undefined,
  ) {
    this.from = after;
    this.reachedEarlier = after ?? 0n;
    this.open(after);
  }

  /** Every update received, over all its streams, in order. */
  get updates(): EvaluationUpdate[] {
    return [...this.earlier, ...(this.current?.updates ?? [])];
  }

  /** The highest position an update, progress or caught-up message carried (where to resume). */
  get reached(): bigint {
    const current = this.current?.reached ?? 0n;
    return current > this.reachedEarlier ? current : this.reachedEarlier;
  }

  private open(after: bigint | undefined): void {
    const record = recordFirehose(this.query, after !== undefined ? { afterPosition: after.toString() } : {});
    this.current = record;
    // After the record's own listener: what it saw is in the record already.
    record.call.on('data', () => {
      this.inARow = 0;
      this.from ??= record.caughtUpAt;
      this.notify();
    });
    void record.finished.then((result) => {
      this.earlier.push(...record.updates);
      if (record.reached > this.reachedEarlier) this.reachedEarlier = record.reached;
      this.current = undefined;
      if (this.stopped) return;
      this.endings.push(
        result === 'ok'
          ? 'OK (the server ended the stream)'
          : `${status[result.code] ?? result.code}: ${result.details}`,
      );
      if (this.endings.length > MAX_RESUMES) {
        this.fail(
          new Error(`${this.name}: more than ${MAX_RESUMES} resumes; last ends: ${this.endings.slice(-3).join(' / ')}`),
        );
        return;
      }
      this.inARow += 1;
      // A live watcher that never caught up starts live again; any other resumes after what it saw.
      const resumeAfter = this.from === undefined ? undefined : this.reached;
      setTimeout(() => this.stopped || this.open(resumeAfter), Math.min(1000, 50 * (this.inARow - 1)));
    });
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) {
      if (!waiter.ready()) continue;
      this.waiters.delete(waiter);
      waiter.resolve();
    }
  }

  private fail(err: Error): void {
    this.failure = err;
    for (const waiter of [...this.waiters]) waiter.reject(err);
    this.waiters.clear();
  }

  private waitFor(what: string, ready: () => boolean, timeoutMs: number): Promise<void> {
    if (ready()) return Promise.resolve();
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(
          new Error(
            `${this.name}: no ${what} within ${timeoutMs / 1000}s (reached ${this.reached}, ` +
              `${this.endings.length} resumes, last ends: ${this.endings.slice(-3).join(' / ') || 'none'})`,
          ),
        );
      }, timeoutMs);
      const waiter = {
        ready,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.waiters.add(waiter);
    });
  }

  whenCaughtUp(timeoutMs = 20_000): Promise<void> {
    return this.waitFor('caught-up marker', () => this.from !== undefined, timeoutMs);
  }

  whenReached(position: bigint, timeoutMs = 30_000): Promise<void> {
    return this.waitFor(`position ${position}`, () => this.reached >= position, timeoutMs);
  }

  stop(): void {
    this.stopped = true;
    this.current?.cancel();
  }

  /** What it got is the log after where it started: every change once, in position order. */
  expectSawLog(log: readonly LoggedEvent[]): void {
    if (this.from === undefined) throw new Error(`${this.name} never caught up`);
    expectSameAsLog(this.updates, log, this.from, `${this.name} (after ${this.from}, ${this.endings.length} resumes)`);
  }
}
