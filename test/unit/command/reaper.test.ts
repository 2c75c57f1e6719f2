import { expect } from 'chai';
import { RevisionConflictError, UnavailableError } from '../../../shared/errors';
import {
  createReaper,
  findZombies,
  reaperRulesOf,
  sweepIntervalMs,
  type LastSeen,
  type ReaperRules,
  type RunningEvaluation,
  type RunningEvaluations,
  type RunningPage,
  type SweepResult,
} from '../../../services/command/application/reaper';
import type { Command, CommandResult, FailEvaluation } from '../../../services/command/domain';
import { deferred, recordingLogger } from './in-memory-ports';

const T0 = Date.UTC(2025, 0, 1);
const SECOND = 1000;
/** TTL 30 s, grace 60 s: the defaults. */
const RULES: ReaperRules = { healthTtlMs: 30 * SECOND, lostGraceMs: 60 * SECOND };

const at = (ms: number): Date => new Date(T0 + ms);

function running(overrides: Partial<RunningEvaluation> = {}): RunningEvaluation {
  return {
    evalId: 'e-1',
    tenant: 'default',
    executorId: 'exec-1',
    startedAt: at(0),
    timeoutSeconds: 3600,
    revision: '2',
    ...overrides,
  };
}

/** The reasons findZombies gives, by eval id. */
function judged(
  evaluations: RunningEvaluation[],
  lastSeen: Record<string, number>,
  nowMs: number,
  options: { watchingSinceMs?: number; rules?: ReaperRules } = {},
): Record<string, string> {
  const zombies = findZombies(
    evaluations,
    new Map(Object.entries(lastSeen).map(([id, ms]) => [id, T0 + ms])),
    { now: at(nowMs), watchingSince: at(options.watchingSinceMs ?? -3600 * SECOND) },
    options.rules ?? RULES,
  );
  return Object.fromEntries(zombies.map((z) => [z.evaluation.evalId, z.reason]));
}

describe('reaper', () => {
  describe('findZombies', () => {
    it('fails with executor_lost once the executor has been silent past TTL + grace, not a moment before', () => {
      const e = [running()];
      // Last report 10 s after the start: the deadline is 10 + 30 + 60 = 100 s.
      expect(judged(e, { 'exec-1': 10 * SECOND }, 100 * SECOND)).to.deep.equal({});
      expect(judged(e, { 'exec-1': 10 * SECOND }, 100 * SECOND + 1)).to.deep.equal({ 'e-1': 'executor_lost' });
    });

    it('says in the error which executor, when it last reported, and the TTL and grace', () => {
      const [zombie] = findZombies(
        [running()],
        new Map([['exec-1', T0 + 10 * SECOND]]),
        {
          now: at(200 * SECOND),
          watchingSince: at(0),
        },
        RULES,
      );
      expect(zombie?.error).to.equal(
        'executor "exec-1" stopped reporting its health: last report at 2025-01-01T00:00:10.000Z, then none for ' +
          'longer than the 30 s health TTL plus 60 s of grace; failed by the service (EXECUTOR_LOST)',
      );
    });

    it('leaves alone an evaluation whose executor keeps reporting, and one of an executor that never reported', () => {
      const e = [running({ evalId: 'reporting' }), running({ evalId: 'silent-kind', executorId: 'exec-never' })];
      expect(judged(e, { 'exec-1': 500 * SECOND }, 520 * SECOND)).to.deep.equal({});
      // Long after any deadline, still nothing: only executors that report are watched so.
      expect(judged([running({ executorId: 'exec-never' })], {}, 3000 * SECOND)).to.deep.equal({});
      expect(judged([running({ executorId: undefined })], {}, 3000 * SECOND)).to.deep.equal({});
    });

    it('counts the start as a sign of life: a report before it does not doom a fresh evaluation', () => {
      const e = [running({ startedAt: at(1000 * SECOND) })];
      expect(judged(e, { 'exec-1': 0 }, 1050 * SECOND)).to.deep.equal({});
      expect(judged(e, { 'exec-1': 0 }, 1090 * SECOND + 1)).to.deep.equal({ 'e-1': 'executor_lost' });
    });

    it('counts no silence from before the reaper could hear reports (a restart, a Redis outage)', () => {
      const e = [running()];
      // Silent since 10 s, but the reaper only watches since 500 s: the deadline is 590 s.
      expect(judged(e, { 'exec-1': 10 * SECOND }, 590 * SECOND, { watchingSinceMs: 500 * SECOND })).to.deep.equal({});
      expect(judged(e, { 'exec-1': 10 * SECOND }, 590 * SECOND + 1, { watchingSinceMs: 500 * SECOND })).to.deep.equal({
        'e-1': 'executor_lost',
      });
    });

    it('fails with timeout past timeout_seconds + grace, whatever the executor', () => {
      const e = [
        running({ evalId: 'reporting', timeoutSeconds: 10 }),
        running({ evalId: 'never-reported', executorId: 'exec-never', timeoutSeconds: 10 }),
      ];
      // Started at 0, timeout 10 s, grace 60 s: the deadline is 70 s.
      expect(judged(e, { 'exec-1': 69 * SECOND }, 70 * SECOND)).to.deep.equal({});
      expect(judged(e, { 'exec-1': 69 * SECOND }, 70 * SECOND + 1)).to.deep.equal({
        reporting: 'timeout',
        'never-reported': 'timeout',
      });
      const [zombie] = findZombies(e.slice(0, 1), new Map(), { now: at(71 * SECOND), watchingSince: at(0) }, RULES);
      expect(zombie?.error).to.equal(
        'ran past its timeout with no end reported: started at 2025-01-01T00:00:00.000Z with timeout_seconds 10, ' +
          'then 60 s of grace; failed by the service (TIMEOUT)',
      );
    });

    it('when both rules apply, names the one whose deadline passed first', () => {
      // Executor silent from 0: lost after 90 s. Timeout 100 s: timed out after 160 s.
      expect(judged([running({ timeoutSeconds: 100 })], { 'exec-1': 0 }, 500 * SECOND)).to.deep.equal({
        'e-1': 'executor_lost',
      });
      // Executor silent from 400 s: lost after 490 s; timed out after 160 s.
      expect(judged([running({ timeoutSeconds: 100 })], { 'exec-1': 400 * SECOND }, 500 * SECOND)).to.deep.equal({
        'e-1': 'timeout',
      });
    });

    it('fails nothing when the grace is 0 (the reaper is off)', () => {
      const rules = reaperRulesOf({ healthTtlSeconds: 30, lostGraceSeconds: 0 });
      expect(judged([running({ timeoutSeconds: 1 })], { 'exec-1': 0 }, 1e6 * SECOND, { rules })).to.deep.equal({});
    });

    it('sweeps at half the shorter of TTL and grace, at least every 0.5 s', () => {
      expect(sweepIntervalMs(RULES)).to.equal(15_000);
      expect(sweepIntervalMs(reaperRulesOf({ healthTtlSeconds: 1, lostGraceSeconds: 1 }))).to.equal(500);
      expect(sweepIntervalMs(reaperRulesOf({ healthTtlSeconds: 30, lostGraceSeconds: 10 }))).to.equal(5000);
    });
  });

  describe('createReaper', () => {
    /** A settable clock. */
    function manualClock(ms: number): { now(): Date; set(ms: number): void } {
      let current = ms;
      return { now: () => at(current), set: (next) => void (current = next) };
    }

    interface Fakes {
      rows: RunningEvaluation[];
      lastSeen: Map<string, number>;
      pages: (number | undefined)[];
      commands: Command[];
      pgDown: boolean;
      redisDown: boolean;
      /** An error to refuse a command with instead of executing it. */
      refuse?: (command: FailEvaluation) => Error | undefined;
    }

    function fakes(): {
      state: Fakes;
      running: RunningEvaluations<number>;
      health: LastSeen;
      executor: { execute(c: Command): Promise<CommandResult> };
    } {
      const state: Fakes = { rows: [], lastSeen: new Map(), pages: [], commands: [], pgDown: false, redisDown: false };
      return {
        state,
        running: {
          page(after, limit): Promise<RunningPage<number>> {
            state.pages.push(after);
            if (state.pgDown) return Promise.reject(new UnavailableError('PostgreSQL is unavailable'));
            const from = after ?? 0;
            const evaluations = state.rows.slice(from, from + limit);
            return Promise.resolve({
              evaluations,
              ...(evaluations.length === limit ? { next: from + limit } : {}),
            });
          },
        },
        health: {
          lastSeen(ids) {
            if (state.redisDown) return Promise.reject(new UnavailableError('Redis is unavailable'));
            return Promise.resolve(
              new Map(ids.flatMap((id) => (state.lastSeen.has(id) ? [[id, state.lastSeen.get(id) as number]] : []))),
            );
          },
        },
        executor: {
          execute(command) {
            state.commands.push(command);
            const refused = command.type === 'FailEvaluation' ? state.refuse?.(command) : undefined;
            if (refused !== undefined) return Promise.reject(refused);
            return Promise.resolve({
              evalId: command.type === 'SubmitEvaluation' ? '' : command.evalId,
              revision: '3',
              position: '9',
            });
          },
        },
      };
    }

    it('fails a zombie with the revision it saw, its reason and what happened', async () => {
      const f = fakes();
      f.state.rows = [running({ evalId: 'lost', revision: '7' }), running({ evalId: 'fine', executorId: 'exec-2' })];
      f.state.lastSeen.set('exec-1', T0);
      f.state.lastSeen.set('exec-2', T0 + 200 * SECOND);
      const clock = manualClock(0);
      const told: SweepResult[] = [];
      const reaper = createReaper({
        ...f,
        clock,
        rules: RULES,
        logger: recordingLogger(),
        onSweep: (swept) => told.push(swept),
      });
      clock.set(200 * SECOND);
      const result = await reaper.sweep();
      expect(result).to.deep.equal({
        examined: 2,
        failed: [{ evalId: 'lost', reason: 'executor_lost' }],
        preempted: 0,
      });
      expect(told).to.deep.equal([result]);
      expect(f.state.commands).to.have.length(1);
      expect(f.state.commands[0]).to.deep.include({
        type: 'FailEvaluation',
        evalId: 'lost',
        reason: 'executor_lost',
        expectedRevision: '7',
        exitCode: 0,
      });
      expect((f.state.commands[0] as FailEvaluation).error).to.match(/^executor "exec-1" stopped reporting/);
    });

    it('takes a failure another writer pre-empted (ABORTED) in its stride, and goes on', async () => {
      const f = fakes();
      f.state.rows = [running({ evalId: 'a' }), running({ evalId: 'b' })];
      f.state.lastSeen.set('exec-1', T0);
      f.state.refuse = (c) => (c.evalId === 'a' ? new RevisionConflictError('a', '2', '3') : undefined);
      const logger = recordingLogger();
      const clock = manualClock(0);
      const reaper = createReaper({ ...f, clock, rules: RULES, logger });
      clock.set(500 * SECOND);
      expect(await reaper.sweep()).to.deep.equal({
        examined: 2,
        failed: [{ evalId: 'b', reason: 'executor_lost' }],
        preempted: 1,
      });
      expect(logger.entries.filter((e) => e.level === 'debug').map((e) => e.fields.evalId)).to.deep.equal(['a']);
    });

    it('skips a sweep while PostgreSQL or Redis is down, and does not blame executors for a Redis outage', async () => {
      const f = fakes();
      f.state.rows = [running()];
      f.state.lastSeen.set('exec-1', T0);
      const logger = recordingLogger();
      const clock = manualClock(0);
      const reaper = createReaper({ ...f, clock, rules: RULES, logger });

      f.state.pgDown = true;
      clock.set(500 * SECOND);
      expect(await reaper.sweep()).to.deep.include({ skipped: 'postgres', failed: [] });
      f.state.pgDown = false;
      f.state.redisDown = true;
      expect(await reaper.sweep()).to.deep.include({ skipped: 'redis', failed: [] });
      expect(f.state.commands).to.deep.equal([]);
      expect(logger.entries.filter((e) => e.level === 'warn')).to.have.length(2);

      // Redis is back at 500 s: the executor gets TTL + grace from then to report.
      f.state.redisDown = false;
      expect(await reaper.sweep()).to.deep.include({ failed: [] });
      clock.set(590 * SECOND);
      expect(await reaper.sweep()).to.deep.include({ failed: [] });
      clock.set(590 * SECOND + 1);
      expect(await reaper.sweep()).to.deep.include({ failed: [{ evalId: 'e-1', reason: 'executor_lost' }] });
    });

    it('stops a sweep at an outage while failing, to read that page again; logs an unexpected error and goes on', async () => {
      const f = fakes();
      f.state.rows = ['a', 'b', 'c', 'd'].map((evalId) => running({ evalId }));
      f.state.lastSeen.set('exec-1', T0);
      f.state.refuse = (c) =>
        c.evalId === 'a' ? new Error('bug') : c.evalId === 'c' ? new UnavailableError('down') : undefined;
      const logger = recordingLogger();
      const clock = manualClock(0);
      const reaper = createReaper({ ...f, clock, rules: RULES, logger, pageSize: 3 });
      clock.set(500 * SECOND);
      expect(await reaper.sweep()).to.deep.equal({
        examined: 3,
        failed: [{ evalId: 'b', reason: 'executor_lost' }],
        preempted: 0,
        skipped: 'postgres',
      });
      expect(f.state.commands.map((c) => (c as FailEvaluation).evalId)).to.deep.equal(['a', 'b', 'c']);
      expect((await logger.next('error')).fields.evalId).to.equal('a');

      f.state.refuse = undefined;
      await reaper.sweep();
      expect(f.state.pages, 'the same page again').to.deep.equal([undefined, undefined]);
      expect(f.state.commands.slice(3).map((c) => (c as FailEvaluation).evalId)).to.deep.equal(['a', 'b', 'c']);
    });

    it('reads one page per sweep, going on where the last one ended and starting over after the end', async () => {
      const f = fakes();
      f.state.rows = ['a', 'b', 'c', 'd', 'e'].map((evalId) => running({ evalId }));
      const reaper = createReaper({
        ...f,
        clock: manualClock(0),
        rules: RULES,
        logger: recordingLogger(),
        pageSize: 2,
      });
      const examined = [];
      for (let i = 0; i < 4; i += 1) examined.push((await reaper.sweep()).examined);
      expect(f.state.pages).to.deep.equal([undefined, 2, 4, undefined]);
      expect(examined).to.deep.equal([2, 2, 1, 2]);
    });

    it('sweeps on its timer until stopped; stop waits for the sweep under way; a throwing sweep is logged', async () => {
      const f = fakes();
      const logger = recordingLogger();
      const held = deferred();
      let sweeps = 0;
      const firstSweep = deferred();
      const reaper = createReaper({
        ...f,
        running: {
          async page() {
            sweeps += 1;
            if (sweeps === 1) throw new Error('not an outage');
            firstSweep.resolve();
            await held.promise;
            return { evaluations: [] };
          },
        },
        clock: manualClock(0),
        rules: RULES,
        logger,
        intervalMs: 1,
      });
      reaper.start();
      expect((await logger.next('error')).msg).to.equal('reaper sweep failed');
      await firstSweep.promise;
      let stopped = false;
      const stopping = reaper.stop().then(() => (stopped = true));
      await Promise.resolve();
      expect(stopped, 'stop waits for the sweep under way').to.equal(false);
      held.resolve();
      await stopping;
      expect(sweeps).to.equal(2);
    });
  });
});
