import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { changeChannel } from '../../shared/changes';
import { call, expectError, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import {
  expectReadModelsEqualLog,
  expectSameAsLog,
  forgedChangeMessages,
  readEventLog,
  readFirehoseThrough,
  recordFirehose,
  runBurst,
  startFaultStack,
  waitForProjection,
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
    const channel = changeChannel(stack.env.REDIS_KEY_PREFIX ?? 'fault', 0);
    let flooding = true;
    let sent = 0;
    const flood = (async () => {
      while (flooding) {
        for (const message of await forgedChangeMessages(stack.databaseUrl, 'flood-0')) {
          await publisher.spublish(channel, message);
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
