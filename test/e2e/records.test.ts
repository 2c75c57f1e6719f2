import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createRedisClient, redisTargetOf, type RedisClient } from '../../shared/redis';
import {
  EvaluationStatus,
  EventType,
  ExecutorStatus,
  Severity,
  ViolationType,
} from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  SecurityEventKind,
  type WatchEvaluationResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { createKeyLayout } from '../../services/query/read-models/keys';
import { call, expectError, readStream, statusDetails, untilAnswered, type Clients } from '../support/clients';
import type { TestEnvironment } from '../support/environment';
import { startServices, type RunningServices } from '../support/services';

const submission = (overrides: Record<string, unknown> = {}) => ({
  evalId: '',
  code: 'print("hello")',
  language: 'python',
  engine: 'docker',
  timeoutSeconds: 30,
  metadata: { suite: 'e2e-records' },
  requestId: '',
  ...overrides,
});

describe('e2e: metrics, security events and the queue, from command to query', function () {
  this.timeout(60_000);
  let services: RunningServices;
  let environment: TestEnvironment;
  let clients: Clients;
  let redis: RedisClient;

  before(async () => {
    services = await startServices();
    ({ environment, clients } = services);
    redis = createRedisClient(redisTargetOf(environment.config));
  });

  after(async () => {
    redis?.disconnect();
    await services?.close();
  });

  const submit = async (overrides: Record<string, unknown> = {}) =>
    call(clients.command, clients.command.submitEvaluation, submission(overrides));
  const start = async (evalId: string, executorId = 'exec-1') =>
    call(clients.command, clients.command.startEvaluation, {
      evalId,
      executorId,
      containerId: `c-${evalId}`,
      requestId: '',
    });
  const read = async (evalId: string, minPosition: string) =>
    (await call(clients.query, clients.query.getEvaluation, { evalId, minPosition })).evaluation;

  it('RecordMetrics: the summary in the evaluation, every point back in series order, a page at a time', async () => {
    const { command, query } = clients;
    const { evalId } = await submit();
    await start(evalId);
    const at = new Date();
    const point = (name: string, value: number, step: number) => ({
      name,
      value,
      unit: 's',
      step: String(step),
      timestamp: at,
    });
    await call(command, command.recordMetrics, {
      evalId,
      metrics: [point('loss', 0.9, 1), point('loss', 0.7, 2), point('acc', 0.5, 1)],
      requestId: '',
    });
    const second = await call(command, command.recordMetrics, {
      evalId,
      metrics: [point('loss', 0.4, 3), point('acc', 0.75, 2), point('acc', 0.8, 3), point('loss', 0.5, 0)],
      requestId: '',
    });
    const evaluation = await read(evalId, second.position);
    expect(evaluation?.metrics.map((m) => [m.name, m.count, m.min, m.max, m.lastValue, m.lastStep])).to.deep.equal([
      ['acc', '3', 0.5, 0.8, 0.8, '3'],
      ['loss', '4', 0.4, 0.9, 0.4, '3'],
    ]);

    const seen: [string, string | undefined, number][] = [];
    let pageToken = '';
    do {
      const page = await call(query, query.getEvaluationMetrics, { evalId, names: [], pageSize: 3, pageToken });
      expect(page.metrics.length).to.be.at.most(3);
      seen.push(...page.metrics.map((m): [string, string | undefined, number] => [m.name, m.step, m.value]));
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    expect(seen).to.deep.equal([
      ['acc', '1', 0.5],
      ['acc', '2', 0.75],
      ['acc', '3', 0.8],
      ['loss', '0', 0.5],
      ['loss', '1', 0.9],
      ['loss', '2', 0.7],
      ['loss', '3', 0.4],
    ]);
    const lossAfter1 = await call(query, query.getEvaluationMetrics, {
      evalId,
      names: ['loss'],
      afterStep: '1',
      pageSize: 0,
      pageToken: '',
    });
    expect(lossAfter1.metrics.map((m) => m.value)).to.deep.equal([0.7, 0.4]);
    expect(lossAfter1.metrics.map((m) => m.revision)).to.deep.equal(['3', '4']);

    const unknown = await expectError(
      call(query, query.getEvaluationMetrics, { evalId: 'nobody-here', names: [], pageSize: 0, pageToken: '' }),
    );
    expect(unknown.code).to.equal(status.NOT_FOUND);
    const badToken = await expectError(
      call(query, query.getEvaluationMetrics, { evalId, names: ['acc'], pageSize: 0, pageToken: 'garbage' }),
    );
    expect(statusDetails(badToken).badRequest?.fieldViolations.map((v) => v.field)).to.deep.equal(['page_token']);
    const nan = await expectError(
      call(command, command.recordMetrics, {
        evalId,
        metrics: [point('ok', 1, 1), { name: 'bad', value: Number.NaN, unit: '', timestamp: at }],
        requestId: '',
      }),
    );
    expect(nan.code).to.equal(status.INVALID_ARGUMENT);
    expect(statusDetails(nan).badRequest?.fieldViolations.map((v) => [v.field, v.reason])).to.deep.equal([
      ['metrics[1].value', 'FINITE'],
    ]);
  });

  it('RecordSecurityEvent: violations counted in the evaluation, told to its watchers, listed newest first', async () => {
    const { command, query } = clients;
    const { evalId } = await submit();
    const created = await call(command, command.recordSecurityEvent, {
      containerCreated: {
        evalId,
        containerId: 'sandbox-1',
        image: 'python:3.12',
        limits: {
          cpuCores: 1,
          memoryBytes: '1073741824',
          pids: '128',
          network: 'none',
          diskBytes: '0',
          timeoutSeconds: 30,
        },
      },
      requestId: '',
    });
    await start(evalId);
    await read(evalId, created.position);
    const watch = readStream<WatchEvaluationResponse>(query.watchEvaluation({ evalId, afterRevision: '3' }));
    const violation = (violationType: ViolationType, severity = Severity.SEVERITY_HIGH) =>
      call(command, command.recordSecurityEvent, {
        resourceViolation: {
          evalId,
          containerId: 'sandbox-1',
          violationType,
          details: { observed: 2, limit: 1 },
          actionTaken: 'throttled',
          severity,
        },
        requestId: '',
      });
    await violation(ViolationType.VIOLATION_TYPE_CPU);
    await violation(ViolationType.VIOLATION_TYPE_SYSCALL);
    const last = await violation(ViolationType.VIOLATION_TYPE_CPU, Severity.SEVERITY_LOW);
    const evaluation = await read(evalId, last.position);
    expect(evaluation?.violations).to.deep.equal([
      { violationType: ViolationType.VIOLATION_TYPE_CPU, count: '2' },
      { violationType: ViolationType.VIOLATION_TYPE_SYSCALL, count: '1' },
    ]);
    const told: [string, EventType][] = [];
    while (told.length < 3) {
      const m = await watch.next();
      if (m.update !== undefined) told.push([m.update.revision, m.update.eventType]);
    }
    watch.cancel();
    expect(told).to.deep.equal([
      ['4', EventType.EVENT_TYPE_SECURITY_VIOLATION],
      ['5', EventType.EVENT_TYPE_SECURITY_VIOLATION],
      ['6', EventType.EVENT_TYPE_SECURITY_VIOLATION],
    ]);

    const all = await call(query, query.listSecurityEvents, {
      evalId,
      containerId: '',
      kind: SecurityEventKind.SECURITY_EVENT_KIND_UNSPECIFIED,
      violationTypes: [],
      pageSize: 2,
      pageToken: '',
    });
    expect(all.events.map((e) => e.revision)).to.deep.equal(['6', '5']);
    // An event recorded while paging lands above the cursor: the next page goes on where it was.
    await violation(ViolationType.VIOLATION_TYPE_MEMORY);
    const rest = await call(query, query.listSecurityEvents, {
      evalId,
      containerId: '',
      kind: SecurityEventKind.SECURITY_EVENT_KIND_UNSPECIFIED,
      violationTypes: [],
      pageSize: 2,
      pageToken: all.nextPageToken,
    });
    expect(rest.events.map((e) => e.revision)).to.deep.equal(['4', '2']);
    expect(rest.events[1]?.containerCreated?.image).to.equal('python:3.12');
    expect(rest.events[1]?.containerCreated?.limits?.pids).to.equal('128');
    const cpu = await call(query, query.listSecurityEvents, {
      evalId: '',
      containerId: 'sandbox-1',
      kind: SecurityEventKind.SECURITY_EVENT_KIND_UNSPECIFIED,
      violationTypes: [ViolationType.VIOLATION_TYPE_CPU],
      pageSize: 0,
      pageToken: '',
    });
    expect(cpu.events.map((e) => [e.resourceViolation?.severity, e.resourceViolation?.details])).to.deep.equal([
      [Severity.SEVERITY_LOW, { observed: 2, limit: 1 }],
      [Severity.SEVERITY_HIGH, { observed: 2, limit: 1 }],
    ]);
    const conflicting = await expectError(
      call(query, query.listSecurityEvents, {
        evalId,
        containerId: '',
        kind: SecurityEventKind.SECURITY_EVENT_KIND_CONTAINER_CREATED,
        violationTypes: [ViolationType.VIOLATION_TYPE_CPU],
        pageSize: 0,
        pageToken: '',
      }),
    );
    expect(statusDetails(conflicting).badRequest?.fieldViolations.map((v) => v.field)).to.deep.equal([
      'violation_types',
    ]);
    const unknown = await expectError(
      call(command, command.recordSecurityEvent, {
        resourceViolation: {
          evalId: 'nobody-here',
          containerId: 'x',
          violationType: ViolationType.VIOLATION_TYPE_PIDS,
          actionTaken: '',
          severity: 0,
        },
        requestId: '',
      }),
    );
    expect(unknown.code).to.equal(status.NOT_FOUND);
  });

  it('GetQueueMetrics: exact counts per language, engine and executor, refused while an index is damaged', async () => {
    const { command, query } = clients;
    const before = await call(query, query.getQueueMetrics, {});
    const base = (rows: { key: string; queued: string; running: string }[], key: string) =>
      rows.find((r) => r.key === key) ?? { key, queued: '0', running: '0' };
    const a = await submit({ language: 'go', engine: 'gvisor' });
    const b = await submit({ language: 'go', engine: 'gvisor' });
    await submit({ language: 'rust', engine: 'gvisor' });
    await start(a.evalId, 'queue-exec');
    const done = await call(command, command.cancelEvaluation, { evalId: b.evalId, reason: 'no', requestId: '' });
    await read(b.evalId, done.position);

    const after = await call(query, query.getQueueMetrics, {});
    expect(Number(after.position)).to.be.at.least(Number(done.position));
    expect(Number(after.queued) - Number(before.queued)).to.equal(1);
    expect(Number(after.running) - Number(before.running)).to.equal(1);
    expect(base(after.byLanguage, 'go')).to.deep.equal({ key: 'go', queued: '0', running: '1' });
    expect(base(after.byLanguage, 'rust')).to.deep.equal({ key: 'rust', queued: '1', running: '0' });
    expect(Number(base(after.byEngine, 'gvisor').queued) - Number(base(before.byEngine, 'gvisor').queued)).to.equal(1);
    expect(base(after.byExecutor, 'queue-exec')).to.deep.equal({ key: 'queue-exec', queued: '0', running: '1' });
    expect(after.oldestQueuedCreatedAt).to.be.instanceOf(Date);
    expect(after.oldestQueuedAgeSeconds).to.be.at.least(0);

    // A facet index deleted by hand: the counts are not the truth until it is rewritten.
    const layout = createKeyLayout(environment.config.redisKeyPrefix, environment.config.readModelPartitions);
    await redis.del(layout.indexFacet(0, 'default', EvaluationStatus.EVALUATION_STATUS_QUEUED, 'language', 'rust'));
    const { answer, refusals } = await untilAnswered(() => call(query, query.getQueueMetrics, {}), 20_000);
    expect(refusals).to.be.greaterThan(0);
    expect(base(answer.byLanguage, 'rust')).to.deep.equal({ key: 'rust', queued: '1', running: '0' });
  });

  it('ListExecutors: an executor that reports its health is listed with its report and age', async () => {
    const { command, query } = clients;
    const { ttlSeconds } = await call(command, command.reportExecutorHealth, {
      executorId: 'lister-1',
      status: ExecutorStatus.EXECUTOR_STATUS_DEGRADED,
      capacity: 4,
      running: 3,
      version: '1.2.3',
      metrics: { load: 0.75 },
    });
    expect(ttlSeconds).to.be.greaterThan(0);
    const { executors } = await call(query, query.listExecutors, {});
    const listed = executors.find((e) => e.executorId === 'lister-1');
    expect(listed).to.deep.include({
      status: ExecutorStatus.EXECUTOR_STATUS_DEGRADED,
      capacity: 4,
      running: 3,
      version: '1.2.3',
      metrics: { load: 0.75 },
    });
    expect(listed?.ageSeconds).to.be.within(0, ttlSeconds);
  });
});
