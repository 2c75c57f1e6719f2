import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { call, expectError, readStream, type Clients } from '../support/clients';
import { startService, type RunningService } from '../support/processes';
import {
  expectReadModelsEqualLog,
  QUERY_SERVICE,
  readEventLog,
  recordHealth,
  runBurst,
  startFaultStack,
  startQueryService,
  waitForProjection,
  type FaultStack,
  type HealthRecord,
} from './harness';

describe('fault: Redis reaches maxmemory (noeviction) while commands go on', function () {
  this.timeout(180_000);
  let f: FaultStack;
  let health: HealthRecord | undefined;

  before(async () => {
    f = await startFaultStack();
  });

  after(async () => {
    health?.close();
    await f?.redis.config('SET', 'maxmemory', '0').catch(() => undefined);
    await f?.close();
  });

  it('stops moving and says so, answers at its checkpoint, refuses min_position beyond it, and catches up once memory frees', async () => {
    const [{ command, query }] = f.clients as [Clients];
    const [queryService] = f.replicas as [RunningService];
    const { stack, redis } = f;
    await runBurst(command, 'roomy', 100);
    const before = await readEventLog(stack.databaseUrl);
    const applied = before[before.length - 1]?.position ?? 0n;
    await waitForProjection(query, applied);
    health = recordHealth(queryService.address, QUERY_SERVICE);
    await health.whenStatus('SERVING', 0);
    const seen = health.statuses.length;

    // One byte: every command that adds data is refused from now on.
    expect(await redis.config('SET', 'maxmemory', '1')).to.equal('OK');
    await runBurst(command, 'full', 60);
    const log = await readEventLog(stack.databaseUrl);
    const head = log[log.length - 1]?.position ?? 0n;

    await health.whenStatus('NOT_SERVING', seen);
    const status = await call(query, query.getProjectionStatus, {});
    expect(status.stalledReason).to.contain('out of memory');
    expect(BigInt(status.checkpoint)).to.equal(applied);
    // What is there is the truth at the checkpoint: still served.
    const { evaluation } = await call(query, query.getEvaluation, { evalId: 'roomy-0' });
    expect(evaluation?.evalId).to.equal('roomy-0');
    // Lists and watches too: their reads are no MULTI, which Redis refuses when out of memory.
    const page = await call(query, query.listEvaluations, { status: 0, pageSize: 1000, pageToken: '' });
    const roomy = new Set(before.map((e) => e.evalId));
    expect(page.evaluations.filter((e) => roomy.has(e.evalId))).to.have.length(roomy.size);
    const watch = readStream(query.watchEvaluation({ evalId: 'roomy-1', afterRevision: '0' }));
    const first = await watch.next();
    expect(first.update?.revision).to.equal('1');
    watch.cancel();
    // A position the read models cannot reach is refused at once, not waited for until the deadline.
    const startedAt = Date.now();
    const refused = await expectError(
      call(query, query.getEvaluation, { evalId: 'full-0', minPosition: head.toString() }, 20_000),
    );
    expect(refused.code).to.equal(grpcStatus.UNAVAILABLE);
    expect(refused.details).to.contain('out of memory');
    expect(Date.now() - startedAt, 'refused well before its 20 s deadline').to.be.below(5_000);

    expect(await redis.config('SET', 'maxmemory', '0')).to.equal('OK');
    await health.whenStatus('SERVING', health.statuses.indexOf('NOT_SERVING', seen) + 1, 30_000);
    await waitForProjection(query, head);
    const after = await call(query, query.getProjectionStatus, {});
    expect(after.stalledReason).to.equal('');
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
  });

  it('refuses to start on a Redis that evicts keys, unless told to run anyway', async () => {
    const { stack, redis } = f;
    expect(await redis.config('SET', 'maxmemory-policy', 'allkeys-lru')).to.equal('OK');
    try {
      let refusal = '';
      await startService('query', stack.env, { startTimeoutMs: 20_000 }).then(
        async (started) => {
          await started.stop();
          expect.fail('the query service started on an evicting Redis');
        },
        (err: unknown) => (refusal = (err as Error).message),
      );
      expect(refusal).to.contain('maxmemory-policy allkeys-lru').and.contain('REDIS_ALLOW_EVICTION');
      const allowed = await startQueryService({ ...stack.env, REDIS_ALLOW_EVICTION: 'true' });
      try {
        expect(allowed.logs()).to.contain('running anyway');
      } finally {
        await allowed.stop();
      }
    } finally {
      await redis.config('SET', 'maxmemory-policy', 'noeviction');
    }
  });
});
