import type { Logger } from '../../../shared/logging';
import type { Checkpoints } from '../read-models/checkpoints';
import { eventMark, minCheckpoint, type CheckpointMark } from '../read-models/checkpoints';
import type { ApplyResult, ProjectionApplier } from './applier';
import { GapError } from './plan';
import type { EventBatch, EventLog } from './event-log';
import { createWaker } from '../live/waker';

export interface ProjectorStatus {
  /** Lowest partition checkpoint this replica knows of. */
  readonly checkpoint: bigint;
  /** Highest event-log position this replica has read from the log. */
  readonly head: bigint;
  /** True once the read models reached the log head seen at start (health: SERVING). */
  readonly caughtUp: boolean;
  /** Events this replica applied (every one read from PostgreSQL). */
  readonly catchUpEvents: bigint;
  /** Since when (clock ms) the checkpoint has been behind the head; undefined when not. */
  readonly behindSince: number | undefined;
  /**
   * Why the read models cannot move although the log can (Redis refuses writes: out of memory,
   * read-only); undefined while they can. The replica is then NOT_SERVING (health) but still
   * answers reads at its checkpoint.
   */
  readonly stalled: string | undefined;
}

export interface Projector {
  /** Starts the projection loop (catch-up from the checkpoint first). Returns at once. */
  start(): void;
  /** Stops the loop after the step in progress. */
  stop(): Promise<void>;
  /**
   * A change was announced on pub/sub at `position`: a hint that the log has grown, never a
   * fact. It wakes a catch-up from the log (when the position is beyond the checkpoint); the
   * message itself is never applied, and does not move the head this replica reports.
   */
  notify(position: bigint): void;
  /** Asks for a catch-up from PostgreSQL (reconnects, gaps, timers). */
  requestCatchUp(reason: string): void;
  /**
   * A read found these evaluations' read models lost (a record deleted or evicted): they are
   * rewritten from the log, in the loop between steps (never beside one of this replica's).
   */
  repair(evalIds: readonly string[]): void;
  status(): ProjectorStatus;
  /** Resolves once caught up (at once when already). */
  whenCaughtUp(): Promise<void>;
}

export interface ProjectorOptions {
  readonly eventLog: EventLog;
  readonly applier: ProjectionApplier;
  readonly checkpoints: Pick<Checkpoints, 'readMarks'>;
  readonly logger: Logger;
  /**
   * Deletes the read models and projects the log again (projection/rebuild.ts): run when the
   * read models were built from another log (LogChangedError). Throws RebuildRunningError
   * while another replica's rebuild holds the fence (the step is then retried).
   */
  readonly rebuild: () => Promise<void>;
  /** Catch up when pub/sub has been quiet this long. */
  readonly catchUpIntervalMs: number;
  /** Events read from PostgreSQL per step. */
  readonly batchSize?: number;
  /**
   * Told when the replica's health changes: SERVING when caught up and not stalled (see
   * ProjectorStatus.stalled), NOT_SERVING otherwise.
   */
  readonly onServingChange?: (serving: boolean) => void;
  /**
   * Told once the projection reached the log's end after the read models went backwards (Redis lost data, a checkpoint deleted): the replay folded the
   * log over whatever was left, and index members that left keys put there without a record
   * saying so are only found by a sweep (redis/index-counts.ts). A replay from 0 that finds
   * records ahead of it counts too: a replica that starts after the loss knows of it no other way.
   */
  readonly onReplayedOverLoss?: () => void;
  /** Why a failed step means the read models cannot move (undefined: an ordinary failure). */
  readonly stallReason?: (err: unknown) => string | undefined;
  /**
   * Told after each step that applied events, or found the checkpoint moved on by another
   * replica: the change log grew (a polling tail reads it then: redis/change-log-tail.ts).
   */
  readonly onStep?: () => void;
  readonly clock?: () => number;
}

/** Evaluations waiting for a repair; past this, more are dropped (a later read finds them again). */
const MAX_PENDING_REPAIRS = 10_000;
/** The catch-up reason of a step a pub/sub message woke. */
const ANNOUNCED = 'change announced';
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 5_000;

/** How long to wait before retrying after `failures` failed steps in a row (1 or more). */
export function backoffDelayMs(failures: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(failures - 1, 16));
}

/** Whether the `failures`-th failure in a row is logged: the first, then every 20th (no flood). */
export function logsFailure(failures: number): boolean {
  return failures === 1 || failures % 20 === 0;
}

/**
 * Where this replica stands (checkpoint, head, catch-up count) and whether it serves: it serves
 * once the checkpoint reaches the target (the log head seen at start, or after Redis lost data).
 */
export interface ServingState {
  readonly checkpoint: bigint;
  readonly head: bigint;
  readonly caughtUp: boolean;
  /** True once `startServingAt` set a target. */
  readonly started: boolean;
  /** Sets the head to reach before serving, and sees it. */
  startServingAt(target: bigint): void;
  /**
   * The read models went backwards (Redis lost data) or were built from another log: stop
   * serving until `logHead`, the log's head now, is reached. The head is reset to it: a log
   * that went backwards has a lower head than the one seen before.
   */
  stopServing(logHead: bigint): void;
  /** A new checkpoint (what a step applied up to); serves once it reaches the target. */
  setCheckpoint(value: bigint): void;
  /** A position known to exist in the log (read from it: never a pub/sub message's word). */
  seeHead(position: bigint): void;
  countCatchUp(applied: number): void;
  /** A step failed because Redis refuses writes (`reason`), or one succeeded (undefined). */
  setStalled(reason: string | undefined): void;
  status(): ProjectorStatus;
  /** Resolves once caught up (at once when already). */
  whenCaughtUp(): Promise<void>;
}

export function createServingState(deps: {
  readonly logger: Logger;
  readonly clock: () => number;
  readonly onServingChange?: (serving: boolean) => void;
}): ServingState {
  const { logger, clock } = deps;
  let checkpoint = 0n;
  let head = 0n;
  let target: bigint | undefined; // the head to reach before serving
  let caughtUp = false;
  let stalled: string | undefined;
  let catchUpEvents = 0n;
  let behindSince: number | undefined;
  // What health says: caught up and not stalled, told only when it changes.
  let healthy = false;
  const tellHealth = (): void => {
    const now = caughtUp && stalled === undefined;
    if (now === healthy) return;
    healthy = now;
    deps.onServingChange?.(now);
  };
  // One shared promise for everyone waiting to be caught up (not one resolver per call).
  let caughtUpSignal: { promise: Promise<void>; resolve: () => void } | undefined;

  const seeHead = (position: bigint): void => {
    if (position > head) head = position;
    if (checkpoint < head) behindSince ??= clock();
  };

  return {
    get checkpoint() {
      return checkpoint;
    },
    get head() {
      return head;
    },
    get caughtUp() {
      return caughtUp;
    },
    get started() {
      return target !== undefined;
    },
    startServingAt(value) {
      target = value;
      seeHead(target);
    },
    stopServing(logHead) {
      target = logHead;
      head = logHead;
      if (checkpoint < head) behindSince ??= clock();
      caughtUp = false;
      tellHealth();
    },
    setCheckpoint(value) {
      checkpoint = value;
      if (head < checkpoint) head = checkpoint;
      if (checkpoint >= head) behindSince = undefined;
      else behindSince ??= clock();
      if (!caughtUp && target !== undefined && checkpoint >= target) {
        caughtUp = true;
        logger.info('projection caught up; serving', { checkpoint: checkpoint.toString(), head: head.toString() });
        caughtUpSignal?.resolve();
        caughtUpSignal = undefined;
        tellHealth();
      }
    },
    seeHead,
    countCatchUp(applied) {
      catchUpEvents += BigInt(applied);
    },
    setStalled(reason) {
      if (reason === stalled) return;
      if (reason !== undefined) logger.error('the read models cannot move: NOT_SERVING until they can', { reason });
      else logger.info('the read models move again', { checkpoint: checkpoint.toString() });
      stalled = reason;
      tellHealth();
    },
    status: () => ({ checkpoint, head, caughtUp, catchUpEvents, behindSince, stalled }),
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

/** What a projection step needs: the projector's options, resolved, and its serving state. */
interface StepDeps {
  readonly eventLog: EventLog;
  readonly applier: ProjectionApplier;
  readonly checkpoints: Pick<Checkpoints, 'readMarks'>;
  readonly logger: Logger;
  readonly batchSize: number;
  readonly clock: () => number;
  readonly serving: ServingState;
  readonly rebuild: () => Promise<void>;
  /** A replay over what may be left of earlier read models starts (see onReplayedOverLoss). */
  readonly lostData: () => void;
  readonly onStep?: () => void;
}

/** The read models were built from another event log than the one PostgreSQL has now. */
export class LogChangedError extends Error {
  override name = 'LogChangedError';
}

/**
 * Reads the batch after `from`, starting one event earlier to check that the log still has the
 * event the checkpoint names (no extra round trip). Throws LogChangedError when it does not:
 * the log went backwards (restored from a backup, a failover that lost commits, a database
 * recreated under a live Redis) and its positions are being reused by other events.
 */
async function readVerified(
  deps: Pick<StepDeps, 'eventLog' | 'batchSize'>,
  from: bigint,
  marks: readonly CheckpointMark[],
): Promise<EventBatch> {
  const expected = marks.find((m) => m.position === from && m.event !== undefined)?.event;
  if (from === 0n || expected === undefined) return deps.eventLog.readAfter(from, deps.batchSize);
  const { events, full } = await deps.eventLog.readAfter(from - 1n, deps.batchSize + 1);
  const [at, ...after] = events;
  if (at === undefined || at.position !== from.toString() || eventMark(at) !== expected) {
    // The event the checkpoint names left the log with retention: what follows it is all there.
    if (from === (await deps.eventLog.horizon())) return deps.eventLog.readAfter(from, deps.batchSize);
    throw new LogChangedError(
      `the read models are at position ${from}, event ${expected}, but the event log has ` +
        (at === undefined || at.position !== from.toString() ? 'no event there' : `${eventMark(at)} there`),
    );
  }
  return { events: after, full };
}

/** Reads the log from the lowest partition checkpoint and applies it, batch by batch, to its end. */
async function catchUp(deps: StepDeps, reason: string): Promise<void> {
  const { eventLog, applier, checkpoints, logger, clock, serving } = deps;
  if (!serving.started) {
    const target = await eventLog.headPosition();
    serving.startServingAt(target);
    logger.info('projection starting', { head: target.toString() });
  }
  let fromZero: boolean | undefined;
  for (;;) {
    const marks = await checkpoints.readMarks();
    const from = minCheckpoint(marks.map((m) => m.position));
    fromZero ??= from === 0n;
    if (from < serving.checkpoint) {
      // The read models went backwards: Redis was flushed or restarted without its data.
      logger.warn('read models are behind what this replica applied before (Redis lost data); rebuilding', {
        checkpoint: from.toString(),
        previous: serving.checkpoint.toString(),
      });
      serving.stopServing(await eventLog.headPosition());
      deps.lostData();
    }
    if (from === 0n) {
      // Read models that start from nothing start at the log's horizon (retention): the
      // events at or below it left the log, and only archived evaluations had them.
      const horizon = await eventLog.horizon();
      if (horizon > 0n && marks.every((m) => m.position === 0n)) {
        logger.info('starting at the event log horizon: the events below it were archived', {
          horizon: horizon.toString(),
        });
        await applier.skipTo(horizon);
        continue;
      }
      if (horizon > 0n) {
        // One partition lost its checkpoint while others hold data: neither a replay from 0
        // (the log starts above the horizon) nor a skip (the others may be below it) is whole.
        logger.error('a partition of the read models starts from nothing below the event log horizon; rebuilding', {
          horizon: horizon.toString(),
        });
        serving.stopServing(await eventLog.headPosition());
        await deps.rebuild();
        continue;
      }
    }
    let batch: EventBatch;
    try {
      batch = await readVerified(deps, from, marks);
    } catch (err) {
      if (!(err instanceof LogChangedError)) throw err;
      logger.error('the event log is not the one the read models were built from; rebuilding them', {
        reason: err.message,
      });
      serving.stopServing(await eventLog.headPosition());
      await deps.rebuild();
      continue;
    }
    const { events, full } = batch;
    const last = events[events.length - 1];
    if (last === undefined) {
      // Another replica applied what this step came for: the change log has grown all the same.
      if (from > serving.status().checkpoint) deps.onStep?.();
      serving.setCheckpoint(from);
      return;
    }
    serving.seeHead(BigInt(last.position));
    let result: ApplyResult;
    try {
      result = await applier.apply(events);
    } catch (err) {
      // Read models below the log's horizon (a checkpoint that names no event, on a replica
      // that slept while retention moved the horizon past it) missed archived events.
      if (!(err instanceof GapError) || from >= (await eventLog.horizon())) throw err;
      logger.error(
        'the read models are behind the event log horizon (archived events they never applied); rebuilding',
        {
          checkpoint: from.toString(),
        },
      );
      serving.stopServing(await eventLog.headPosition());
      await deps.rebuild();
      continue;
    }
    // Records ahead of a replay from 0: earlier read models are left (a replica that starts
    // after a checkpoint was lost cannot tell it from none otherwise).
    if (fromZero && result.fromLog > 0) deps.lostData();
    serving.countCatchUp(result.applied);
    serving.setCheckpoint(result.checkpoint);
    deps.onStep?.();
    const fields = {
      reason,
      from: from.toString(),
      to: last.position,
      events: events.length,
      applied: result.applied,
      checkpoint: result.checkpoint.toString(),
      lagPositions: (serving.head - result.checkpoint).toString(),
      // Age of the oldest event this batch applied: how far behind the read models were.
      lagSeconds: Math.max(0, (clock() - Date.parse(events[0]?.recordedAt ?? '')) / 1000) || 0,
    };
    // A step woken by an announced change is the normal path, one per change when quiet.
    if (result.applied > 0 && reason !== ANNOUNCED) logger.info('catch-up batch applied', fields);
    else if (result.applied > 0) logger.debug('announced changes applied', fields);
    else logger.debug('catch-up batch already applied by another replica', fields);
    if (!full) return;
  }
}

/**
 * Keeps the read models up to date with the event log, exactly once and in order.
 *
 * One loop per replica does all the work, one step at a time: every step is a catch-up that
 * reads the log from the lowest partition checkpoint in batches — woken by a pub/sub message,
 * a reconnect, a quiet period or a failed step. Pub/sub carries hints, not truth: a message is
 * never applied, so a forged or malformed one cannot change a read model (at most it costs one
 * read of the log), and hints that arrive while a step runs fold into one next step. Each step is an atomic
 * compare-and-set per partition (see ProjectionApplier), so replicas sharing a Redis never
 * apply an event twice or skip one. Failures (PostgreSQL or Redis down) are retried with
 * exponential backoff.
 */
export function createProjector(options: ProjectorOptions): Projector {
  const { logger, catchUpIntervalMs } = options;
  const clock = options.clock ?? Date.now;
  const serving = createServingState({ logger, clock, onServingChange: options.onServingChange });
  const waker = createWaker();

  let stopped = false;
  let loop: Promise<void> | undefined;
  let catchUpReason: string | undefined = 'start';
  const pendingRepairs = new Set<string>();
  let replayingOverLoss = false;

  const requestCatchUp = (reason: string): void => {
    catchUpReason ??= reason;
    waker.wake();
  };
  const steps: StepDeps = {
    eventLog: options.eventLog,
    applier: options.applier,
    checkpoints: options.checkpoints,
    logger,
    batchSize: options.batchSize ?? 500,
    clock,
    serving,
    rebuild: options.rebuild,
    lostData: () => {
      replayingOverLoss = true;
    },
    ...(options.onStep !== undefined ? { onStep: options.onStep } : {}),
  };

  const addRepair = (evalId: string): void => {
    if (pendingRepairs.size < MAX_PENDING_REPAIRS) pendingRepairs.add(evalId);
  };

  async function run(): Promise<void> {
    let failures = 0;
    let retryAt = 0;
    while (!stopped) {
      try {
        // Before any catch-up: a read is refusing until these are back.
        if (pendingRepairs.size > 0 && serving.started && clock() >= retryAt) {
          const evalIds = [...pendingRepairs];
          pendingRepairs.clear();
          try {
            const repaired = await options.applier.repair(evalIds);
            // None rewritten: they were past HOT_RETENTION (taken out on purpose) or unknown.
            if (repaired > 0)
              logger.warn('read models found lost by a read were rewritten from the log', {
                asked: evalIds.length,
                repaired,
                first: evalIds[0],
              });
          } catch (err) {
            for (const evalId of evalIds) addRepair(evalId);
            throw err;
          }
          continue;
        }
        if (catchUpReason !== undefined && clock() >= retryAt) {
          const reason = catchUpReason;
          catchUpReason = undefined;
          await catchUp(steps, reason);
          if (replayingOverLoss) {
            replayingOverLoss = false;
            options.onReplayedOverLoss?.();
          }
          serving.setStalled(undefined);
          if (failures > 0)
            logger.info('projection recovered', { failures, checkpoint: serving.checkpoint.toString() });
          failures = 0;
          continue;
        }
        const waitMs = catchUpReason !== undefined ? Math.max(0, retryAt - clock()) : catchUpIntervalMs;
        const woken = await waker.sleep(waitMs);
        if (!woken && !stopped) catchUpReason ??= 'timer';
      } catch (err) {
        failures += 1;
        const delay = backoffDelayMs(failures);
        retryAt = clock() + delay;
        catchUpReason ??= 'retry';
        const stalled = options.stallReason?.(err);
        if (stalled !== undefined) serving.setStalled(stalled);
        if (logsFailure(failures)) {
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
      waker.wake();
      await loop;
    },
    notify(position) {
      if (position > serving.checkpoint) requestCatchUp(ANNOUNCED);
    },
    requestCatchUp,
    repair(evalIds) {
      for (const evalId of evalIds) addRepair(evalId);
      waker.wake();
    },
    status: () => serving.status(),
    whenCaughtUp: () => serving.whenCaughtUp(),
  };
}
