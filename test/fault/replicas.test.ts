import { expect } from 'chai';
import { EvaluationStatus } from '../../shared/generated/crucible/storage/v1/evaluation';
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
  waitForProjection,
  type EvaluationWatchRecord,
  type FirehoseRecord,
  cancelOpenStreams,
} from './harness';

describe('fault: two query replicas share one Redis', function () {
  this.timeout(180_000);
  let stack: PrivateStack;
  let commandService: RunningService | undefined;
  const replicas: RunningService[] = [];
  const clients: Clients[] = [];

  before(async () => {
    stack = await startPrivateStack();
    commandService = await startCommandService(stack.env);
    for (let i = 0; i < 2; i += 1) {
      const replica = await startQueryService(stack.env);
      replicas.push(replica);
      clients.push(createClients(commandService.address, replica.address));
    }
  });

  after(async () => {
    cancelOpenStreams();
    for (const c of clients) c.close();
    for (const replica of replicas) await replica.stop();
    await commandService?.stop();
    await stack?.close();
  });

  it('every watcher on every replica sees every update exactly once, in order', async () => {
    const command = clients[0]?.command;
    if (command === undefined || clients.length !== 2) throw new Error('set-up failed');

    const watched = Array.from({ length: 4 }, (_, i) => `watched-${i}`);
    let submitted = 0n;
    for (const evalId of watched) submitted = BigInt((await runStep(command, evalId, 'submit')).position);
    // A watch of an id its replica has not projected yet is NOT_FOUND (docs/read-models.md).
    for (const { query } of clients) await waitForProjection(query, submitted);

    // On each replica: a firehose replaying from the start, a live-only one, one filtered by
    // status, and a watcher per evaluation from its first revision.
    const watchers = clients.map(({ query }) => ({
      replay: recordFirehose(query, { afterPosition: '0' }),
      live: recordFirehose(query, {}),
      completed: recordFirehose(query, {
        afterPosition: '0',
        statuses: [EvaluationStatus.EVALUATION_STATUS_COMPLETED],
      }),
      evaluations: new Map<string, EvaluationWatchRecord>(
        watched.map((id) => [id, recordEvaluationWatch(query, id, 0n)]),
      ),
    }));
    for (const w of watchers) {
      await Promise.all([w.replay, w.live, w.completed].map((f) => f.whenCaughtUp()));
      for (const e of w.evaluations.values()) await e.whenRevision(1n);
    }

    const burst = startBurst(command, plansFor('burst', 600), { concurrency: 8 });
    await burst.whenSucceeded(200);
    for (const evalId of watched) await runStep(command, evalId, 'start');
    await burst.whenSucceeded(400);
    for (const [i, evalId] of watched.entries()) await runStep(command, evalId, i % 2 === 0 ? 'complete' : 'fail');
    await burst.done;
    expect(burst.failures, describeFailures(burst.failures)).to.deep.equal([]);

    const log = await readEventLog(stack.databaseUrl);
    const head = log[log.length - 1]?.position ?? 0n;
    expect(log.length).to.equal(watched.length * 3 + 600);
    for (const { query } of clients) await waitForProjection(query, head);

    for (const [r, w] of watchers.entries()) {
      const all: FirehoseRecord[] = [w.replay, w.live];
      await Promise.all(all.map((f) => f.whenReached(head)));
      expectSameAsLog(w.replay.updates, log, 0n, `replica ${r}: firehose from position 0`);
      const liveFrom = w.live.caughtUpAt ?? 0n;
      expectSameAsLog(w.live.updates, log, liveFrom, `replica ${r}: live firehose (from ${liveFrom})`);
      expect(w.live.updates.length, `replica ${r}: the live firehose saw the burst`).to.be.greaterThan(600);

      // Filtered: exactly the changes that left an evaluation completed, in log order. Its
      // progress messages are periodic, so "reached" is checked through the last match.
      const completions = log.filter((e) => e.eventType === 'EvaluationCompleted');
      await w.completed.whenReached(completions[completions.length - 1]?.position ?? 0n);
      expect(w.completed.updates.map(describeUpdate), `replica ${r}: COMPLETED firehose`).to.deep.equal(
        completions.map(describeLogged),
      );

      for (const evalId of watched) {
        const record = w.evaluations.get(evalId);
        expect(await record?.finished, `replica ${r}: watcher of ${evalId} ends after the terminal state`).to.equal(
          'ok',
        );
        expect(record?.updates.map(describeUpdate), `replica ${r}: ${evalId}`).to.deep.equal(
          log.filter((e) => e.evalId === evalId).map(describeLogged),
        );
      }
    }

    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
  });
});
