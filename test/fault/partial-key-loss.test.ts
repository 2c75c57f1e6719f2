import { expect } from 'chai';
import { Redis } from 'ioredis';
import { createKeyLayout, type KeyLayout } from '../../services/query/read-models/keys';
import { call, createClients, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import { startPrivateStack, type PrivateStack } from '../support/private-servers';
import {
  cancelOpenStreams,
  describeFailures,
  expectReadModelsEqualLog,
  plansFor,
  QUERY_SERVICE,
  readEvaluations,
  readEventLog,
  recordHealth,
  runStep,
  startBurst,
  startCommandService,
  startQueryService,
  waitForProjection,
  type HealthRecord,
} from './harness';

describe('fault: read-model keys deleted under a running query service', function () {
  this.timeout(180_000);
  let stack: PrivateStack;
  let commandService: RunningService | undefined;
  let queryService: RunningService | undefined;
  let clients: Clients | undefined;
  let health: HealthRecord | undefined;
  let redis: Redis | undefined;
  let layout: KeyLayout;

  before(async () => {
    stack = await startPrivateStack();
    commandService = await startCommandService(stack.env);
    queryService = await startQueryService(stack.env);
    clients = createClients(commandService.address, queryService.address);
    redis = new Redis(stack.env.REDIS_URL ?? '', { maxRetriesPerRequest: 1 });
    layout = createKeyLayout(stack.env.REDIS_KEY_PREFIX ?? 'crucible', 1);
  });

  after(async () => {
    cancelOpenStreams();
    health?.close();
    clients?.close();
    redis?.disconnect();
    await queryService?.stop();
    await commandService?.stop();
    await stack?.close();
  });

  it('a deleted checkpoint with dozens of evaluations in the log is repaired from the log: no duplicate history, the checker clean', async () => {
    if (clients === undefined || queryService === undefined || redis === undefined) throw new Error('set-up failed');
    const { command, query } = clients;
    const burst = startBurst(command, plansFor('lost-cp', 400), { concurrency: 8 });
    await burst.done;
    expect(burst.failures, describeFailures(burst.failures)).to.deep.equal([]);
    const evaluations = await readEvaluations(stack.databaseUrl);
    // The old repair took one evaluation per attempt and gave up after 20: far more than that.
    expect(evaluations.length).to.be.greaterThan(60);
    const before = await readEventLog(stack.databaseUrl);
    await waitForProjection(query, before[before.length - 1]?.position ?? 0n);

    health = recordHealth(queryService.address, QUERY_SERVICE);
    await health.whenStatus('SERVING', 0);
    const seen = health.statuses.length;
    expect(await redis.del(layout.checkpoint(0))).to.equal(1);
    // The next command's announcement wakes a catch-up, which finds the read models behind
    // what this replica applied: it stops serving, replays the log over the surviving keys,
    // and serves again.
    const next = await runStep(command, 'after-loss', 'submit');
    await health.whenStatus('NOT_SERVING', seen);
    await health.whenStatus('SERVING', health.statuses.indexOf('NOT_SERVING', seen) + 1, 30_000);
    await waitForProjection(query, BigInt(next.position));
    const { evaluation } = await call(query, query.getEvaluation, { evalId: 'after-loss' });
    expect(evaluation?.revision).to.equal('1');
    // The checker compares every history with revisions 1..n: a replayed entry appended twice fails it.
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
  });
});
