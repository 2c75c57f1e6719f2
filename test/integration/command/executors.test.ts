import { openAccess } from '../../../shared/grpc';
import { credentials, status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createRedisClient, redisTargetOf } from '../../../shared/redis';
import { decodeExecutorHealth, executorKeys } from '../../../shared/executors';
import {
  EvaluationCommandServiceClient,
  ReportExecutorHealthRequest,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import { ExecutorStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { GrpcServer } from '../../../shared/grpc';
import { silentLogger } from '../../../shared/logging';
import {
  createReaper,
  reaperRulesOf,
  type Reaper,
  type RunningEvaluations,
} from '../../../services/command/application/reaper';
import { createPostgresRunningEvaluations } from '../../../services/command/postgres/running-evaluations';
import { createRedisExecutorHealth, type RedisExecutorHealth } from '../../../services/command/redis/executor-health';
import { createCommandServer } from '../../../services/command/server';
import { call, expectError, statusDetails } from '../../support/clients';
import { createHarness, denseLog, eventsOf, racingStore, type Harness } from './harness';

const SECOND = 1000;
const DAY = 24 * 3600 * SECOND;

/** A clock the test sets; nothing here waits for real time to pass. */
interface ManualClock {
  now(): Date;
  set(at: Date | number): void;
}

function manualClock(start: Date): ManualClock {
  let current = start.getTime();
  return { now: () => new Date(current), set: (at) => void (current = typeof at === 'number' ? at : at.getTime()) };
}

describe('command service: executor health and the reaper', function () {
  this.timeout(60_000);
  let h: Harness;
  let health: RedisExecutorHealth;
  let keys: ReturnType<typeof executorKeys>;
  const reportClock = manualClock(new Date('2025-06-01T12:00:00.000Z'));
  let server: GrpcServer;
  let client: EvaluationCommandServiceClient;

  before(async () => {
    h = await createHarness();
    health = createRedisExecutorHealth(h.redis, h.env.config.redisKeyPrefix, h.env.config.executors);
    keys = executorKeys(h.env.config.redisKeyPrefix);
    server = createCommandServer({
      access: openAccess(silentLogger),
      executor: h.executor,
      limits: h.env.config.limits,
      logger: silentLogger,
      executorHealth: { healthReports: health, clock: reportClock, executors: h.env.config.executors },
    });
    const port = await server.listen('127.0.0.1', 0);
    client = new EvaluationCommandServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await server?.shutdown(1000);
    await h?.close();
  });

  afterEach(async () => {
    expect((await denseLog(h.sql)).problems, 'event log stays dense').to.deep.equal([]);
  });

  const report = (overrides: Partial<ReportExecutorHealthRequest> = {}): ReportExecutorHealthRequest =>
    ReportExecutorHealthRequest.fromPartial({
      executorId: 'exec-report',
      status: ExecutorStatus.EXECUTOR_STATUS_HEALTHY,
      capacity: 4,
      running: 2,
      version: '1.4.0',
      metrics: { load: 0.25, free_memory_bytes: 3.5e9, 'gpu/0': 97.5 },
      ...overrides,
    });

  describe('ReportExecutorHealth', () => {
    it('keeps the report in Redis for the TTL, with its metrics and arrival time, and answers the TTL', async () => {
      reportClock.set(new Date('2025-06-01T12:00:00.000Z'));
      const answer = await call(client, client.reportExecutorHealth, report());
      expect(answer).to.deep.equal({ ttlSeconds: 30 });

      const stored = await h.redis.get(keys.health('exec-report'));
      expect(stored, 'the report is stored').to.be.a('string');
      expect(decodeExecutorHealth(stored as string)).to.deep.equal({
        executorId: 'exec-report',
        status: 'healthy',
        capacity: 4,
        running: 2,
        version: '1.4.0',
        metrics: { load: 0.25, free_memory_bytes: 3.5e9, 'gpu/0': 97.5 },
        reportedAt: new Date('2025-06-01T12:00:00.000Z'),
        tenant: 'default',
      });
      const pttl = await h.redis.pttl(keys.health('exec-report'));
      expect(pttl).to.be.within(28 * SECOND, 30 * SECOND);
      expect(await h.redis.zscore(keys.lastSeen, 'exec-report')).to.equal(
        String(Date.parse('2025-06-01T12:00:00.000Z')),
      );
    });

    it('replaces the report with the next one, its TTL starting over; last-seen never moves back', async () => {
      reportClock.set(new Date('2025-06-01T12:00:10.000Z'));
      await call(client, client.reportExecutorHealth, report({ executorId: 'exec-next', running: 1 }));
      await h.redis.pexpire(keys.health('exec-next'), 5 * SECOND);
      reportClock.set(new Date('2025-06-01T12:00:20.000Z'));
      await call(
        client,
        client.reportExecutorHealth,
        report({ executorId: 'exec-next', status: ExecutorStatus.EXECUTOR_STATUS_DRAINING, metrics: {} }),
      );
      const stored = decodeExecutorHealth((await h.redis.get(keys.health('exec-next'))) as string);
      expect(stored).to.deep.include({ status: 'draining', running: 2, metrics: {} });
      expect(await h.redis.pttl(keys.health('exec-next'))).to.be.above(28 * SECOND);

      // A report stamped by a clock that is behind (another instance) leaves last-seen where it was.
      reportClock.set(new Date('2025-06-01T12:00:15.000Z'));
      await call(client, client.reportExecutorHealth, report({ executorId: 'exec-next' }));
      expect(await h.redis.zscore(keys.lastSeen, 'exec-next')).to.equal(String(Date.parse('2025-06-01T12:00:20.000Z')));
    });

    it('forgets executors not seen for a long time (at least a day), on the next report', async () => {
      const now = Date.parse('2025-06-10T00:00:00.000Z');
      await h.redis.zadd(keys.lastSeen, now - DAY - SECOND, 'exec-long-gone', now - DAY + SECOND, 'exec-recent');
      reportClock.set(now);
      await call(client, client.reportExecutorHealth, report({ executorId: 'exec-pruner' }));
      expect(await h.redis.zscore(keys.lastSeen, 'exec-long-gone')).to.equal(null);
      expect(await h.redis.zscore(keys.lastSeen, 'exec-recent')).to.not.equal(null);
    });

    it('refuses a bad report with INVALID_ARGUMENT naming each field and rule, and stores nothing', async () => {
      const err = await expectError(
        call(
          client,
          client.reportExecutorHealth,
          report({
            executorId: 'exec-bad',
            status: ExecutorStatus.EXECUTOR_STATUS_UNSPECIFIED,
            capacity: -1,
            version: 'v'.repeat(65),
            metrics: { load: Number.NaN },
          }),
        ),
      );
      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      const violations = statusDetails(err).badRequest?.fieldViolations.map((v) => [v.field, v.reason]);
      expect(violations).to.deep.equal([
        ['status', 'REQUIRED'],
        ['capacity', 'NOT_NEGATIVE'],
        ['version', 'TOO_LONG'],
        ['metrics["load"]', 'FINITE'],
      ]);
      const missing = await expectError(call(client, client.reportExecutorHealth, report({ executorId: '' })));
      expect(statusDetails(missing).badRequest?.fieldViolations.map((v) => [v.field, v.reason])).to.deep.equal([
        ['executor_id', 'REQUIRED'],
      ]);
      expect(await h.redis.exists(keys.health('exec-bad'))).to.equal(0);
      expect(await h.redis.zscore(keys.lastSeen, 'exec-bad')).to.equal(null);
    });

    it('answers UNAVAILABLE when Redis cannot take the report', async () => {
      // Never connected and no offline queue, as main.ts's connection during an outage.
      const offline = createRedisClient(redisTargetOf(h.env.config), { lazyConnect: true, enableOfflineQueue: false });
      const down = createCommandServer({
        access: openAccess(silentLogger),
        executor: h.executor,
        limits: h.env.config.limits,
        logger: silentLogger,
        executorHealth: {
          healthReports: createRedisExecutorHealth(offline, h.env.config.redisKeyPrefix, h.env.config.executors),
          clock: reportClock,
          executors: h.env.config.executors,
        },
      });
      const port = await down.listen('127.0.0.1', 0);
      const downClient = new EvaluationCommandServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
      try {
        const err = await expectError(
          call(downClient, downClient.reportExecutorHealth, report({ executorId: 'x-down' })),
        );
        expect(err.code).to.equal(status.UNAVAILABLE);
        expect(err.details).to.match(/Redis is unavailable/);
      } finally {
        downClient.close();
        await down.shutdown(1000);
        offline.disconnect();
      }
    });
  });

  describe('the reaper', () => {
    const rules = (): ReturnType<typeof reaperRulesOf> => reaperRulesOf(h.env.config.executors);

    /** The running evaluations, narrowed to `evalIds`: each test judges only its own. */
    function only(evalIds: readonly string[]): RunningEvaluations<unknown> {
      const all = createPostgresRunningEvaluations(h.pool) as RunningEvaluations<unknown>;
      return {
        async page(after, limit) {
          const page = await all.page(after, limit);
          return { ...page, evaluations: page.evaluations.filter((e) => evalIds.includes(e.evalId)) };
        },
      };
    }

    function reaperOver(
      evalIds: readonly string[],
      clock: ManualClock,
      parts: { running?: RunningEvaluations<unknown>; executor?: Harness['executor'] } = {},
    ): Reaper {
      return createReaper({
        running: parts.running ?? only(evalIds),
        health,
        executor: parts.executor ?? h.executor,
        clock,
        rules: rules(),
        logger: silentLogger,
      });
    }

    /** Submits and starts an evaluation on `executorId`; its row as the reaper will see it. */
    async function startedOn(
      evalId: string,
      executorId: string,
      timeoutSeconds = 600,
    ): Promise<{ startedAt: Date; revision: string }> {
      await h.commands.submit({ evalId, timeoutSeconds });
      await h.commands.start({ evalId, executorId });
      return row(evalId);
    }

    async function row(evalId: string): Promise<{ startedAt: Date; revision: string; status: string }> {
      const { rows } = await h.sql.query<{ started_at: Date; revision: string; status: string }>(
        'SELECT started_at, revision::text, status FROM evaluations WHERE eval_id = $1',
        [evalId],
      );
      const found = rows[0];
      if (found === undefined) return expect.fail(`no evaluation ${evalId}`);
      return { startedAt: found.started_at, revision: found.revision, status: found.status };
    }

    const ms = (date: Date, plus: number): number => date.getTime() + plus;
    /** TTL 30 s + grace 60 s. */
    const LOST_AFTER = 90 * SECOND;

    it('fails a running evaluation whose executor stopped reporting with EXECUTOR_LOST, at the revision it saw', async () => {
      const started = await startedOn('reap-lost', 'exec-lost');
      await health.record(
        { executorId: 'exec-lost', status: 'healthy', capacity: 1, running: 1, version: '', metrics: {} },
        new Date(ms(started.startedAt, 5 * SECOND)),
        'default',
      );
      const clock = manualClock(started.startedAt);
      const reaper = reaperOver(['reap-lost'], clock);

      clock.set(ms(started.startedAt, 5 * SECOND + LOST_AFTER));
      expect(await reaper.sweep(), 'not a moment before TTL + grace').to.deep.include({ examined: 1, failed: [] });
      clock.set(ms(started.startedAt, 5 * SECOND + LOST_AFTER + 1));
      expect(await reaper.sweep()).to.deep.include({ failed: [{ evalId: 'reap-lost', reason: 'executor_lost' }] });

      const events = await eventsOf(h.sql, 'reap-lost');
      expect(events.map((e) => [e.event_type, e.revision])).to.deep.equal([
        ['EvaluationQueued', '1'],
        ['EvaluationStarted', '2'],
        ['EvaluationFailed', '3'],
      ]);
      expect(events[2]?.data).to.deep.include({ reason: 'executor_lost', exitCode: 0 });
      const { rows } = await h.sql.query<{ status: string; failure_reason: string; error_preview: string }>(
        'SELECT status, failure_reason, error_preview FROM evaluations WHERE eval_id = $1',
        ['reap-lost'],
      );
      expect(rows[0]).to.deep.include({ status: 'failed', failure_reason: 'executor_lost' });
      const reportedAt = new Date(ms(started.startedAt, 5 * SECOND)).toISOString();
      expect(rows[0]?.error_preview).to.equal(
        `executor "exec-lost" stopped reporting its health: last report at ${reportedAt}, then none for longer ` +
          'than the 30 s health TTL plus 60 s of grace; failed by the service (EXECUTOR_LOST)',
      );
      expect(await reaper.sweep(), 'an ended evaluation is no candidate').to.deep.include({ examined: 0, failed: [] });
    });

    it('writes nothing when the evaluation moved on after the reaper read it (expected revision)', async () => {
      const started = await startedOn('reap-moved', 'exec-moved');
      await health.record(
        { executorId: 'exec-moved', status: 'healthy', capacity: 1, running: 1, version: '', metrics: {} },
        started.startedAt,
        'default',
      );
      const narrowed = only(['reap-moved']);
      let moved = false;
      const clock = manualClock(started.startedAt);
      const reaper = reaperOver(['reap-moved'], clock, {
        running: {
          async page(after, limit) {
            const page = await narrowed.page(after, limit);
            // Between the reaper's read and its write, the executor reports a metric.
            if (!moved)
              await h.commands.recordMetrics({ evalId: 'reap-moved', metrics: [{ name: 'loss', value: 1, unit: '' }] });
            moved = true;
            return page;
          },
        },
      });
      clock.set(ms(started.startedAt, LOST_AFTER + SECOND));
      expect(await reaper.sweep()).to.deep.include({ failed: [], preempted: 1 });
      expect((await eventsOf(h.sql, 'reap-moved')).map((e) => e.event_type)).to.deep.equal([
        'EvaluationQueued',
        'EvaluationStarted',
        'EvaluationMetricsRecorded',
      ]);
      expect((await row('reap-moved')).status).to.equal('running');

      // The next sweep sees the new revision, and fails it there.
      expect(await reaper.sweep()).to.deep.include({ failed: [{ evalId: 'reap-moved', reason: 'executor_lost' }] });
      expect((await eventsOf(h.sql, 'reap-moved')).map((e) => [e.event_type, e.revision]).at(-1)).to.deep.equal([
        'EvaluationFailed',
        '4',
      ]);
    });

    it('fails an evaluation that ran past timeout_seconds + grace with TIMEOUT, whatever its executor', async () => {
      // Its executor never reported health: only the timeout rule watches it.
      const started = await startedOn('reap-timeout', 'exec-never-reports', 5);
      const clock = manualClock(started.startedAt);
      const reaper = reaperOver(['reap-timeout'], clock);
      clock.set(ms(started.startedAt, 10 * LOST_AFTER));
      expect(await reaper.sweep(), 'an executor that never reported is not judged lost').to.deep.include({
        failed: [{ evalId: 'reap-timeout', reason: 'timeout' }],
      });
      const events = await eventsOf(h.sql, 'reap-timeout');
      expect(events.at(-1)).to.deep.include({ event_type: 'EvaluationFailed', revision: '3' });
      expect(events.at(-1)?.data).to.deep.include({ reason: 'timeout' });
    });

    it('leaves alone the evaluation of an executor that keeps reporting, and of one that never reported', async () => {
      const healthy = await startedOn('reap-healthy', 'exec-healthy');
      await startedOn('reap-unwatched', 'exec-unwatched');
      const clock = manualClock(healthy.startedAt);
      const reaper = reaperOver(['reap-healthy', 'reap-unwatched'], clock);
      for (const step of [1, 2, 3, 4]) {
        const now = ms(healthy.startedAt, step * LOST_AFTER);
        await health.record(
          { executorId: 'exec-healthy', status: 'degraded', capacity: 1, running: 1, version: '', metrics: {} },
          new Date(now - 10 * SECOND),
          'default',
        );
        clock.set(now);
        expect(await reaper.sweep()).to.deep.include({ examined: 2, failed: [] });
      }
      expect((await row('reap-healthy')).status).to.equal('running');
      expect((await row('reap-unwatched')).status).to.equal('running');
      expect((await eventsOf(h.sql, 'reap-healthy')).map((e) => e.event_type)).to.deep.equal([
        'EvaluationQueued',
        'EvaluationStarted',
      ]);
    });

    it('two reapers sweeping at once write one event', async () => {
      const started = await startedOn('reap-twice', 'exec-twice');
      await health.record(
        { executorId: 'exec-twice', status: 'healthy', capacity: 1, running: 1, version: '', metrics: {} },
        started.startedAt,
        'default',
      );
      // Both load the evaluation before either writes: the race is forced, not hoped for.
      const race = racingStore(h.store, 2);
      const clock = manualClock(started.startedAt);
      const reapers = [1, 2].map(() =>
        reaperOver(['reap-twice'], clock, { executor: h.executorWith({ store: race.store }) }),
      );
      clock.set(ms(started.startedAt, LOST_AFTER + SECOND));
      const results = await Promise.all(reapers.map((r) => r.sweep()));

      expect(race.appends, 'both wrote, one won').to.deep.equal({ appended: 1, conflicts: 1 });
      const failedEvents = (await eventsOf(h.sql, 'reap-twice')).filter((e) => e.event_type === 'EvaluationFailed');
      expect(failedEvents).to.have.length(1);
      // The loser saw the same command already written: answered as a repeat (or ABORTED).
      expect(results.map((r) => r.failed.length + r.preempted)).to.deep.equal([1, 1]);
      expect((await row('reap-twice')).status).to.equal('failed');
    });
  });
});
