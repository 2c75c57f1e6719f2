import type { RecordedEvent } from '../../../shared/domain';
import type { Logger } from '../../../shared/logging';
import type { Checkpoints } from '../read-models/checkpoints';
import { minCheckpoint } from '../read-models/checkpoints';
import type { ProjectionApplier } from './applier';
import type { EventLog } from './event-log';
import { GapError } from './plan';

export interface ProjectorStatus {
  /** Lowest partition checkpoint this replica knows of. */
  readonly checkpoint: bigint;
  /** Highest event-log position this replica has seen (log head or pub/sub). */
  readonly head: bigint;
  /** True once the read models reached the log head seen at start (health: SERVING). */
  readonly caughtUp: boolean;
  /** Events this replica applied by reading PostgreSQL (not the pub/sub fast path). */
  readonly catchUpEvents: bigint;
  /** Since when (clock ms) the checkpoint has been behind the head; undefined when not. */
  readonly behindSince: number | undefined;
}

export interface Projector {
  /** Starts the projection loop (catch-up from the checkpoint first). Returns at once. */
  start(): void;
  /** Stops the loop after the step in progress. */
  stop(): Promise<void>;
  /**
   * A change announced on pub/sub (`bytes`: the size of its message): applied directly when
   * it is the next position.
   */
  notify(event: RecordedEvent, bytes: number): void;
  /** Asks for a catch-up from PostgreSQL (reconnects, gaps, timers). */
  requestCatchUp(reason: string): void;
  status(): ProjectorStatus;
  /** Resolves once caught up (at once when already). */
  whenCaughtUp(): Promise<void>;
}

export interface ProjectorOptions {
  readonly eventLog: EventLog;
  readonly applier: ProjectionApplier;
  readonly checkpoints: Checkpoints;
  readonly logger: Logger;
  /** Catch up when pub/sub has been quiet this long. */
  readonly catchUpIntervalMs: number;
  /** Events read from PostgreSQL per step. */
  readonly batchSize?: number;
  /** Told when the replica becomes ready to serve (caught up) or stops being ready. */
  readonly onServingChange?: (serving: boolean) => void;
  readonly clock?: () => number;
}

/**
 * Announced changes held for the fast path, by count and by bytes: past either, the queue is
 * dropped and a catch-up reads the same events from the log in byte-bounded batches (a burst
 * of large changes held by count alone would take GiBs).
 */
const MAX_FAST_QUEUE = 10_000;
const MAX_FAST_QUEUE_BYTES = 16 * 1024 * 1024;
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 5_000;

/**
 * Keeps the read models up to date with the event log, exactly once and in order.
 *
 * One loop per replica does all the work, one step at a time: a pub/sub message whose position
 * is the checkpoint + 1 is applied directly (the fast path: no PostgreSQL read); anything else
 * — start-up, a gap, a reconnect, a quiet period, a failed step — becomes a catch-up that reads
 * the log from the lowest partition checkpoint in batches. Each step is an atomic
 * compare-and-set per partition (see ProjectionApplier), so replicas sharing a Redis never
 * apply an event twice or skip one. Failures (PostgreSQL or Redis down) are retried with
 * exponential backoff.
 */
export function createProjector(options: ProjectorOptions): Projector {
  const { eventLog, applier, checkpoints, logger, catchUpIntervalMs } = options;
  const batchSize = options.batchSize ?? 500;
  const clock = options.clock ?? Date.now;

  let stopped = false;
  let loop: Promise<void> | undefined;
  let checkpoint = 0n;
  let head = 0n;
  let target: bigint | undefined; // the head to reach before serving
  let caughtUp = false;
  let catchUpEvents = 0n;
  let behindSince: number | undefined;
  let catchUpReason: string | undefined = 'start';
  let fastQueue: { event: RecordedEvent; bytes: number }[] = [];
  let fastQueueBytes = 0;
  let wakeUp: (() => void) | undefined;
  // One shared promise for everyone waiting to be caught up (not one resolver per call).
  let caughtUpSignal: { promise: Promise<void>; resolve: () => void } | undefined;

  const wake = (): void => {
    const w = wakeUp;
    wakeUp = undefined;
    w?.();
  };
  /** Resolves true when woken, false when the time ran out. */
  const sleep = (ms: number): Promise<boolean> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => {
        wakeUp = undefined;
        resolve(false);
      }, ms);
      wakeUp = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });

  const setCheckpoint = (value: bigint): void => {
    checkpoint = value;
    if (head < checkpoint) head = checkpoint;
    if (checkpoint >= head) behindSince = undefined;
    else behindSince ??= clock();
    if (!caughtUp && target !== undefined && checkpoint >= target) {
      caughtUp = true;
      logger.info('projection caught up; serving', { checkpoint: checkpoint.toString(), head: head.toString() });
      caughtUpSignal?.resolve();
      caughtUpSignal = undefined;
      options.onServingChange?.(true);
    }
  };

  const seeHead = (position: bigint): void => {
    if (position > head) head = position;
    if (checkpoint < head) behindSince ??= clock();
  };

  const requestCatchUp = (reason: string): void => {
    catchUpReason ??= reason;
    wake();
  };

  async function catchUp(reason: string): Promise<void> {
    if (target === undefined) {
      target = await eventLog.headPosition();
      seeHead(target);
      logger.info('projection starting', { head: target.toString() });
    }
    for (;;) {
      const from = minCheckpoint(await checkpoints.readAll());
      if (from < checkpoint) {
        // The read models went backwards: Redis was flushed or restarted without its data.
        logger.warn('read models are behind what this replica applied before (Redis lost data); rebuilding', {
          checkpoint: from.toString(),
          previous: checkpoint.toString(),
        });
        if (caughtUp) {
          caughtUp = false;
          target = head;
          options.onServingChange?.(false);
        }
      }
      const { events, full } = await eventLog.readAfter(from, batchSize);
      const last = events[events.length - 1];
      if (last === undefined) {
        setCheckpoint(from);
        return;
      }
      seeHead(BigInt(last.position));
      const result = await applier.apply(events);
      catchUpEvents += BigInt(result.applied);
      setCheckpoint(result.checkpoint);
      const fields = {
        reason,
        from: from.toString(),
        to: last.position,
        events: events.length,
        applied: result.applied,
        checkpoint: result.checkpoint.toString(),
        lagPositions: (head - result.checkpoint).toString(),
        // Age of the oldest event this batch applied: how far behind the read models were.
        lagSeconds: Math.max(0, (clock() - Date.parse(events[0]?.recordedAt ?? '')) / 1000) || 0,
      };
      if (result.applied > 0) logger.info('catch-up batch applied', fields);
      else logger.debug('catch-up batch already applied by another replica', fields);
      if (!full) return;
    }
  }

  async function applyFast(event: RecordedEvent): Promise<void> {
    const position = BigInt(event.position);
    if (position <= checkpoint) return;
    if (position !== checkpoint + 1n) {
      requestCatchUp('gap in pub/sub');
      return;
    }
    try {
      const result = await applier.apply([event]);
      setCheckpoint(result.checkpoint);
      logger.debug('applied change', { position: event.position, evalId: event.evalId, applied: result.applied });
    } catch (err) {
      if (!(err instanceof GapError)) throw err;
      requestCatchUp('read models behind the pub/sub message');
    }
  }

  async function run(): Promise<void> {
    let failures = 0;
    let retryAt = 0;
    while (!stopped) {
      try {
        if (catchUpReason !== undefined && clock() >= retryAt) {
          const reason = catchUpReason;
          catchUpReason = undefined;
          await catchUp(reason);
          if (failures > 0) logger.info('projection recovered', { failures, checkpoint: checkpoint.toString() });
          failures = 0;
          continue;
        }
        const queued = fastQueue.shift();
        if (queued !== undefined) {
          fastQueueBytes -= queued.bytes;
          await applyFast(queued.event);
          continue;
        }
        const waitMs = catchUpReason !== undefined ? Math.max(0, retryAt - clock()) : catchUpIntervalMs;
        const woken = await sleep(waitMs);
        if (!woken && !stopped) catchUpReason ??= 'timer';
      } catch (err) {
        failures += 1;
        const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(failures - 1, 16));
        retryAt = clock() + delay;
        catchUpReason ??= 'retry';
        if (failures === 1 || failures % 20 === 0) {
          logger.warn('projection step failed; retrying', { err, failures, retryInMs: delay });
        }
      }
    }
  }

  return {
    start() {
      if (loop !== undefined) return;
      loop = run().catch((err: unknown) => logger.error('projection loop crashed', { err }));
    },
    async stop() {
      stopped = true;
      wake();
      await loop;
    },
    notify(event, bytes) {
      seeHead(BigInt(event.position));
      if (fastQueue.length >= MAX_FAST_QUEUE || fastQueueBytes + bytes > MAX_FAST_QUEUE_BYTES) {
        fastQueue = [];
        fastQueueBytes = 0;
        requestCatchUp('fast-path queue full');
        return;
      }
      fastQueue.push({ event, bytes });
      fastQueueBytes += bytes;
      wake();
    },
    requestCatchUp,
    status: () => ({ checkpoint, head, caughtUp, catchUpEvents, behindSince }),
    whenCaughtUp() {
      if (caughtUp) return Promise.resolve();
      if (caughtUpSignal === undefined) {
        let resolve: () => void = () => undefined;
        const promise = new Promise<void>((r) => (resolve = r));
        caughtUpSignal = { promise, resolve };
      }
      return caughtUpSignal.promise;
    },
  };
}
