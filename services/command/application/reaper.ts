import type { ExecutorConfig } from '../../../shared/config';
import type { FailureKind } from '../../../shared/domain';
import { IllegalTransitionError, NotFoundError, RevisionConflictError, UnavailableError } from '../../../shared/errors';
import type { Logger } from '../../../shared/logging';
import { createPeriodic } from '../../../shared/runtime';
import type { FailEvaluation } from '../domain';
import type { CommandExecutor } from './command-executor';
import type { Clock } from './ports';

/** A running evaluation as the reaper judges it (a row of `evaluations`). */
export interface RunningEvaluation {
  readonly evalId: string;
  /** Its tenant: the reaper's failure is written in it. */
  readonly tenant: string;
  /** Absent only for a row without one (StartEvaluation requires it). */
  readonly executorId?: string;
  /** When it started, by the command service's clock. */
  readonly startedAt?: Date;
  readonly timeoutSeconds: number;
  /** The revision the reaper saw: its failure applies only there. */
  readonly revision: string;
}

export interface RunningPage<C> {
  readonly evaluations: readonly RunningEvaluation[];
  /** Where the next page starts; absent after the last one. */
  readonly next?: C;
}

/** The candidates, oldest first (services/command/postgres/running-evaluations.ts). */
export interface RunningEvaluations<C> {
  page(after: C | undefined, limit: number): Promise<RunningPage<C>>;
}

/** When executors last reported their health (services/command/redis/executor-health.ts). */
export interface LastSeen {
  /** ms since the epoch per executor id; an id that never reported (or was forgotten) is absent. */
  lastSeen(executorIds: readonly string[]): Promise<ReadonlyMap<string, number>>;
}

export interface ReaperRules {
  readonly healthTtlMs: number;
  /** 0: nothing is ever reaped. */
  readonly lostGraceMs: number;
}

export function reaperRulesOf(config: ExecutorConfig): ReaperRules {
  return { healthTtlMs: config.healthTtlSeconds * 1000, lostGraceMs: config.lostGraceSeconds * 1000 };
}

/**
 * Time between sweeps: half the shorter of the TTL and the grace (15 s by default), so an
 * evaluation is failed well within the grace after its deadline; at least 0.5 s, whatever the
 * settings, as each sweep reads PostgreSQL and Redis.
 */
export function sweepIntervalMs(rules: ReaperRules): number {
  return Math.max(500, Math.min(rules.healthTtlMs, rules.lostGraceMs) / 2);
}

/** Running evaluations read per sweep (one page; the next sweep goes on from there). */
export const SWEEP_PAGE_SIZE = 1000;

/** A running evaluation the service must fail, and why. */
export interface Zombie {
  readonly evaluation: RunningEvaluation;
  readonly reason: Extract<FailureKind, 'executor_lost' | 'timeout'>;
  /**
   * What happened, for the evaluation's error. Nothing in it depends on which instance writes
   * it or when it swept, so two instances failing the same evaluation send the same command,
   * and the second is answered as a repeat.
   */
  readonly error: string;
}

/** When the reaper judges: now, and since when it could have heard from executors. */
export interface Moment {
  readonly now: Date;
  /**
   * Since when reports could reach this reaper: its start, or the end of the latest Redis outage
   * it saw. Silence before it counts for nothing, so that a restart of the whole service or an
   * outage of Redis longer than the grace does not fail every running evaluation at once: the
   * executors get the TTL and the grace to report again.
   */
  readonly watchingSince: Date;
}

const iso = (ms: number): string => new Date(ms).toISOString();
const seconds = (ms: number): string => `${ms / 1000} s`;

/**
 * The running evaluations to fail, each with the rule that applies:
 *
 * - `executor_lost`: its executor has reported its health at least once (it is in `lastSeen`)
 *   and then not for longer than the TTL plus the grace. Silence is counted from its last
 *   report, from the evaluation's start (starting it was a sign of life), and from
 *   `watchingSince`, whichever is latest. Executors that never report are never judged so.
 * - `timeout`: it has run longer than its `timeout_seconds` plus the grace (counted from
 *   `watchingSince` at the earliest), whatever its executor.
 *
 * When both apply, the one whose deadline passed first (on a tie, `executor_lost`). Pure: no
 * I/O, no clock but `at`.
 */
export function findZombies(
  running: readonly RunningEvaluation[],
  lastSeen: ReadonlyMap<string, number>,
  at: Moment,
  rules: ReaperRules,
): Zombie[] {
  const { healthTtlMs: ttl, lostGraceMs: grace } = rules;
  if (grace <= 0) return [];
  const now = at.now.getTime();
  const since = at.watchingSince.getTime();
  const zombies: Zombie[] = [];
  for (const evaluation of running) {
    const started = evaluation.startedAt?.getTime();
    const seen = evaluation.executorId === undefined ? undefined : lastSeen.get(evaluation.executorId);
    // Infinity: the rule does not apply (an executor never heard of, a row without a start).
    const lostAfter = seen === undefined ? Infinity : Math.max(seen, started ?? seen, since) + ttl + grace;
    const timedOutAfter =
      started === undefined ? Infinity : Math.max(started + evaluation.timeoutSeconds * 1000, since) + grace;
    if (now <= Math.min(lostAfter, timedOutAfter)) continue;
    if (lostAfter <= timedOutAfter && seen !== undefined) {
      zombies.push({
        evaluation,
        reason: 'executor_lost',
        error:
          `executor ${JSON.stringify(evaluation.executorId)} stopped reporting its health: last report at ` +
          `${iso(seen)}, then none for longer than the ${seconds(ttl)} health TTL plus ${seconds(grace)} ` +
          `of grace; failed by the service (EXECUTOR_LOST)`,
      });
    } else if (started !== undefined) {
      zombies.push({
        evaluation,
        reason: 'timeout',
        error:
          `ran past its timeout with no end reported: started at ${iso(started)} with timeout_seconds ` +
          `${evaluation.timeoutSeconds}, then ${seconds(grace)} of grace; failed by the service (TIMEOUT)`,
      });
    }
  }
  return zombies;
}

/** What one sweep did. */
export interface SweepResult {
  /** Running evaluations judged. */
  readonly examined: number;
  /** Failed by this sweep (or found failed the same way by another instance at the same time). */
  readonly failed: readonly { readonly evalId: string; readonly reason: Zombie['reason'] }[];
  /** Zombies that moved on before the failure was written (ended, or failed by another instance). */
  readonly preempted: number;
  /** Set when the sweep stopped early: this dependency was down; the next sweep tries again. */
  readonly skipped?: 'postgres' | 'redis';
}

export interface Reaper {
  /** One sweep: a page of running evaluations judged, the zombies failed one by one. */
  sweep(): Promise<SweepResult>;
  /** Sweeps every `intervalMs` (timer unref'd: it keeps no process alive) until stop(). */
  start(): void;
  /** No more sweeps; resolves once the one under way (if any) has stopped. */
  stop(): Promise<void>;
}

export interface ReaperDeps<C> {
  readonly running: RunningEvaluations<C>;
  readonly health: LastSeen;
  /** Failures are ordinary commands: validated state machine, expected revision, one event. */
  readonly executor: Pick<CommandExecutor, 'execute'>;
  readonly clock: Clock;
  readonly rules: ReaperRules;
  readonly logger: Logger;
  readonly intervalMs?: number;
  readonly pageSize?: number;
  /** Told what each sweep did (the service's metrics count it). */
  readonly onSweep?: (result: SweepResult) => void;
}

/**
 * "No zombie evaluations": fails running evaluations whose executor is gone or that ran past
 * their timeout (findZombies). Every instance of the command service runs one; two that pick
 * the same evaluation write one event, because each failure carries the revision it saw
 * (`expectedRevision`) and the same text: the second is refused (ABORTED) or answered as a
 * repeat. Nothing escapes the timer: a sweep that finds PostgreSQL or Redis down logs it once
 * and is skipped.
 */
export function createReaper<C>(deps: ReaperDeps<C>): Reaper {
  const { running, health, executor, clock, rules, logger } = deps;
  const intervalMs = deps.intervalMs ?? sweepIntervalMs(rules);
  const pageSize = deps.pageSize ?? SWEEP_PAGE_SIZE;
  let cursor: C | undefined;
  let watchingSince: Date | undefined = clock.now();
  let outage: SweepResult['skipped'];

  const skip = (examined: number, dependency: 'postgres' | 'redis', err: unknown): SweepResult => {
    if (outage !== dependency) logger.warn('reaper sweep skipped: a dependency is unavailable', { dependency, err });
    outage = dependency;
    return { examined, failed: [], preempted: 0, skipped: dependency };
  };

  async function fail(zombie: Zombie): Promise<'failed' | 'preempted'> {
    const { evaluation, reason, error } = zombie;
    const command: FailEvaluation = {
      type: 'FailEvaluation',
      evalId: evaluation.evalId,
      error,
      // It did not exit as far as anyone told the service: 0 is the proto's "unset".
      exitCode: 0,
      reason,
      expectedRevision: evaluation.revision,
    };
    try {
      await executor.execute(command, { tenant: evaluation.tenant });
    } catch (err) {
      if (
        err instanceof RevisionConflictError ||
        err instanceof IllegalTransitionError ||
        err instanceof NotFoundError
      ) {
        logger.debug('reaper: the evaluation moved on first', { evalId: evaluation.evalId, reason, err: err.message });
        return 'preempted';
      }
      throw err;
    }
    logger.info('evaluation failed by the reaper', {
      evalId: evaluation.evalId,
      reason,
      executorId: evaluation.executorId,
      error,
    });
    return 'failed';
  }

  async function sweep(): Promise<SweepResult> {
    const now = clock.now();
    let page: RunningPage<C>;
    try {
      page = await running.page(cursor, pageSize);
    } catch (err) {
      if (err instanceof UnavailableError) return skip(0, 'postgres', err);
      throw err;
    }
    const examined = page.evaluations.length;
    const executorIds = [
      ...new Set(page.evaluations.flatMap((e) => (e.executorId === undefined ? [] : [e.executorId]))),
    ];
    let lastSeen: ReadonlyMap<string, number>;
    try {
      lastSeen = await health.lastSeen(executorIds);
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      // Reports could not be stored either: executors are not to blame for the silence.
      watchingSince = undefined;
      return skip(examined, 'redis', err);
    }
    watchingSince ??= now;
    if (outage !== undefined) logger.info('reaper sweeping again', { after: outage });
    outage = undefined;

    const failed: { evalId: string; reason: Zombie['reason'] }[] = [];
    let preempted = 0;
    for (const zombie of findZombies(page.evaluations, lastSeen, { now, watchingSince }, rules)) {
      if (periodic.stopped) break;
      try {
        if ((await fail(zombie)) === 'failed') failed.push({ evalId: zombie.evaluation.evalId, reason: zombie.reason });
        else preempted += 1;
      } catch (err) {
        // The page again next time: its other zombies are still to fail.
        if (err instanceof UnavailableError) return { ...skip(examined, 'postgres', err), failed, preempted };
        logger.error('reaper could not fail an evaluation', { evalId: zombie.evaluation.evalId, err });
      }
    }
    // After the last page, the next sweep starts from the oldest again.
    cursor = page.next;
    return { examined, failed, preempted };
  }

  const sweepAndTell = async (): Promise<SweepResult> => {
    const result = await sweep();
    deps.onSweep?.(result);
    return result;
  };
  const periodic = createPeriodic(sweepAndTell, intervalMs, (err) => logger.error('reaper sweep failed', { err }));
  return { sweep: sweepAndTell, start: () => periodic.start(), stop: () => periodic.stop() };
}
