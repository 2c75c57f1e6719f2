import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createClients, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import { startPrivateStack, type PrivateStack } from '../support/private-servers';
import {
  describeFailures,
  describeLogged,
  describeUpdate,
  expectReadModelsEqualLog,
  expectSameAsLog,
  plansFor,
  readEventLog,
  recordEvaluationWatch,
  recordFirehose,
  runStep,
  startBurst,
  startCommandService,
  startQueryService,
  type EvaluationWatchRecord,
  cancelOpenStreams,
} from './harness';

describe('fault: kill -9 of the query service during a burst of commands', function () {
  this.timeout(180_000);
  let stack: PrivateStack;
  let commandService: RunningService;
  let queryService: RunningService | undefined;
  let clients: Clients | undefined;
  let restartedClients: Clients | undefined;

  before(async () => {
    stack = await startPrivateStack();
    commandService = await startCommandService(stack.env);
    queryService = await startQueryService(stack.env);
    clients = createClients(commandService.address, queryService.address);
  });

  after(async () => {
    cancelOpenStreams();
    clients?.close();
    restartedClients?.close();
    await queryService?.stop();
    await commandService?.stop();
    await stack?.close();
  });

  it('after a restart the read models equal PostgreSQL and resumed watchers get every missed change once, in order', async () => {
    if (clients === undefined || queryService === undefined) throw new Error('set-up failed');
    const { command, query } = clients;

    // Evaluations watched one by one: three are running, three queued when the query service dies.
    const watched = Array.from({ length: 6 }, (_, i) => `watched-${i}`);
    for (const evalId of watched) await runStep(command, evalId, 'submit');
    for (const evalId of watched.slice(0, 3)) await runStep(command, evalId, 'start');
    const before = await readEventLog(stack.databaseUrl);
    const firehose = recordFirehose(query, { afterPosition: '0' });
    // after_revision 0: every revision from the first, so the comparison with the log is whole.
    const watchers = new Map<string, EvaluationWatchRecord>(
      watched.map((id) => [id, recordEvaluationWatch(query, id, 0n)]),
    );
    await firehose.whenReached(before[before.length - 1]?.position ?? 0n);
    for (const [i, evalId] of watched.entries()) await watchers.get(evalId)?.whenRevision(i < 3 ? 2n : 1n);

    const burst = startBurst(command, plansFor('burst', 1000), { concurrency: 8 });
    await burst.whenSucceeded(300);
    await queryService.kill9();
    const killedAt = burst.succeeded;

    // Every stream breaks with a status the client resumes on.
    for (const record of [firehose, ...watchers.values()]) {
      const ended = await record.finished;
      expect(ended === 'ok' ? 'OK' : status[ended.code], 'a killed server ends streams with UNAVAILABLE').to.equal(
        'UNAVAILABLE',
      );
    }

    // Changes the watchers miss while the query service is down.
    for (const evalId of watched.slice(0, 3)) await runStep(command, evalId, 'complete');
    for (const evalId of watched.slice(3)) {
      await runStep(command, evalId, 'start');
      await runStep(command, evalId, 'cancel');
    }
    await burst.whenSucceeded(killedAt + 300);

    queryService = await startQueryService(stack.env);
    restartedClients = createClients(commandService.address, queryService.address);
    const resumedFirehose = recordFirehose(restartedClients.query, { afterPosition: firehose.reached.toString() });
    const resumedWatchers = new Map(
      watched.map((id) => [id, recordEvaluationWatch(restartedClients!.query, id, watchers.get(id)?.lastRevision)]),
    );

    await burst.done;
    expect(burst.failures, describeFailures(burst.failures)).to.deep.equal([]);
    expect(burst.succeeded).to.equal(1000);

    const log = await readEventLog(stack.databaseUrl);
    const head = log[log.length - 1]?.position ?? 0n;
    expect(log.length).to.equal(before.length + 1000 + 9);
    await resumedFirehose.whenReached(head);

    // The firehose: what it got before the kill and after resuming is the log, exactly.
    expect(resumedFirehose.updates.length, 'the resumed firehose replays what it missed').to.be.greaterThan(300);
    expectSameAsLog([...firehose.updates, ...resumedFirehose.updates], log);

    // Each watcher: revisions 1..n once, in order, with the log's positions; the resumed stream
    // ends by itself after the terminal state.
    for (const evalId of watched) {
      const resumed = resumedWatchers.get(evalId);
      expect(await resumed?.finished, `resumed watcher of ${evalId}`).to.equal('ok');
      const seen = [...(watchers.get(evalId)?.updates ?? []), ...(resumed?.updates ?? [])].map(describeUpdate);
      expect(seen, evalId).to.deep.equal(log.filter((e) => e.evalId === evalId).map(describeLogged));
      expect(resumed?.updates.length, `missed changes of ${evalId}`).to.be.greaterThan(0);
    }

    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
  });
});
