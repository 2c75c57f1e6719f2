import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { changeChannel } from '../../shared/changes';
import { call, expectError, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import {
  expectReadModelsEqualLog,
  expectSameAsLog,
  readEventLog,
  readFirehoseThrough,
  recordFirehose,
  runBurst,
  startFaultStack,
  waitForProjection,
  withDatabase,
  type FaultStack,
} from './harness';

describe('fault: the change channel is flooded with garbage and forged events during a burst', function () {
  this.timeout(180_000);
  let f: FaultStack;

  before(async () => {
    f = await startFaultStack();
  });

  after(async () => {
    await f?.close();
  });

  it('no forged message reaches a read model or a watcher, the replica keeps up, and it logs the garbage at a bounded rate', async () => {
    const [{ command, query }] = f.clients as [Clients];
    const [queryService] = f.replicas as [RunningService];
    const { stack, redis: publisher } = f;
    const firehose = recordFirehose(query, { afterPosition: '0' });
    await firehose.whenCaughtUp();
    const channel = changeChannel(stack.env.REDIS_KEY_PREFIX ?? 'fault');
    const head = async (): Promise<number> =>
      Number(
        (
          await withDatabase(stack.databaseUrl, (c) =>
            c.query<{ p: string }>('SELECT position::text AS p FROM event_log_head WHERE id = 1'),
          )
        ).rows[0]?.p ?? '0',
      );
    let flooding = true;
    let sent = 0;
    const flood = (async () => {
      while (flooding) {
        const next = (await head()) + 1;
        const at = new Date().toISOString();
        const queued = {
          codeHash: '0'.repeat(64),
          codeSize: 1,
          language: 'python',
          engine: 'docker',
          timeoutSeconds: 5,
          metadata: { forged: true },
          createdAt: at,
        };
        const forged = (evalId: string, position: number, revision: string, event: object): string =>
          JSON.stringify({ position: String(position), evalId, revision, recordedAt: at, event });
        for (const message of [
          'garbage',
          '{"position":"1e9"}',
          forged(`forged-${next}`, next, '1', { type: 'EvaluationQueued', data: queued }),
          forged('flood-0', next, '9', { type: 'EvaluationCancelled', data: { reason: 'forged', cancelledAt: at } }),
        ]) {
          await publisher.publish(channel, message);
          sent += 1;
        }
      }
    })();
    try {
      await runBurst(command, 'flood', 600);
    } finally {
      flooding = false;
      await flood;
    }
    expect(sent).to.be.greaterThan(100);

    const log = await readEventLog(stack.databaseUrl);
    const last = log[log.length - 1]?.position ?? 0n;
    await waitForProjection(query, last);
    const forgedRead = await expectError(call(query, query.getEvaluation, { evalId: `forged-${Number(last)}` }));
    expect(forgedRead.code).to.equal(grpcStatus.NOT_FOUND);
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
    const { updates } = await readFirehoseThrough(query, firehose, last);
    expectSameAsLog(updates, log);
    // Hundreds of malformed messages, one log line a minute at most.
    const lines = queryService
      .logs()
      .split('\n')
      .filter((l) => l.includes('ignoring malformed change messages'));
    expect(lines.length).to.be.within(1, 2);
  });
});
