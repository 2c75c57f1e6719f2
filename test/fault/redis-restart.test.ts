import { expect } from 'chai';
import { call, createClients, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import { startPrivateStack, type PrivateStack } from '../support/private-servers';
import {
  describeFailures,
  expectReadModelsEqualLog,
  expectSameAsLog,
  readFirehoseThrough,
  recordFirehose,
  plansFor,
  QUERY_SERVICE,
  readEvaluations,
  readEventLog,
  recordHealth,
  startBurst,
  startCommandService,
  startQueryService,
  waitForProjection,
  wireStatus,
  type HealthRecord,
  cancelOpenStreams,
} from './harness';

describe('fault: Redis restarts (empty) during a burst of commands', function () {
  this.timeout(180_000);
  let stack: PrivateStack;
  let commandService: RunningService | undefined;
  let queryService: RunningService | undefined;
  let clients: Clients | undefined;
  let health: HealthRecord | undefined;

  before(async () => {
    stack = await startPrivateStack();
    commandService = await startCommandService(stack.env);
    queryService = await startQueryService(stack.env);
    clients = createClients(commandService.address, queryService.address);
  });

  after(async () => {
    cancelOpenStreams();
    health?.close();
    clients?.close();
    await queryService?.stop();
    await commandService?.stop();
    await stack?.close();
  });

  it('no command fails; once Redis is back the query service rebuilds, its read models equal PostgreSQL, and a firehose misses nothing', async () => {
    if (clients === undefined || queryService === undefined) throw new Error('set-up failed');
    const { command, query } = clients;
    health = recordHealth(queryService.address, QUERY_SERVICE);
    await health.whenStatus('SERVING', 0);
    const firehose = recordFirehose(query, { afterPosition: '0' });
    await firehose.whenCaughtUp();

    const burst = startBurst(command, plansFor('burst', 1000), { concurrency: 8 });
    await burst.whenSucceeded(250);
    // No persistence: what Redis held (read models, checkpoints, change log) is gone for good.
    await stack.redis.stop();
    const stoppedAt = burst.succeeded;
    const statusesBeforeRestart = health.statuses.length;
    // Commands go on while Redis is down: PostgreSQL is where they are recorded.
    await burst.whenSucceeded(stoppedAt + 250);
    await stack.redis.start();

    await burst.done;
    expect(burst.failures, describeFailures(burst.failures)).to.deep.equal([]);
    expect(burst.succeeded).to.equal(1000);

    // The query service noticed the empty Redis: it stopped serving, rebuilt, and serves again.
    await health.whenStatus('NOT_SERVING', statusesBeforeRestart);
    const notServingAt = health.statuses.indexOf('NOT_SERVING', statusesBeforeRestart);
    await health.whenStatus('SERVING', notServingAt + 1, 60_000);

    const log = await readEventLog(stack.databaseUrl);
    const head = log[log.length - 1]?.position ?? 0n;
    expect(log.length).to.equal(1000);
    await waitForProjection(query, head, 60_000);
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);

    // A firehose client that was watching (and resumes from its last position if its stream
    // broke) has every change exactly once, in order.
    const { updates } = await readFirehoseThrough(query, firehose, head);
    expectSameAsLog(updates, log);

    // Every evaluation reads back in its final state.
    const evaluations = await readEvaluations(stack.databaseUrl);
    const mismatches: string[] = [];
    for (let i = 0; i < evaluations.length; i += 25) {
      await Promise.all(
        evaluations.slice(i, i + 25).map(async (stored) => {
          const got = await call(query, query.getEvaluation, { evalId: stored.evalId, minPosition: head.toString() });
          const actual = `${got.evaluation?.status}@${got.evaluation?.revision}`;
          const expected = `${wireStatus(stored.status)}@${stored.revision}`;
          if (actual !== expected) mismatches.push(`${stored.evalId}: read ${actual}, PostgreSQL has ${expected}`);
        }),
      );
    }
    expect(mismatches).to.deep.equal([]);
  });
});
