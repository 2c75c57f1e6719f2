import { credentials, status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { EvaluationQueryServiceClient } from '../../../shared/generated/crucible/storage/v1/query_service';
import { call, expectError, readStream } from '../../support/clients';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

describe('caps on what clients hold open: RESOURCE_EXHAUSTED past them, room again once closed', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let replica: Replica;
  const extra: EvaluationQueryServiceClient[] = [];

  before(async () => {
    h = await createQueryHarness({ MAX_STREAMS: '4', MAX_STREAMS_PER_CONNECTION: '2' });
    await h.writer.submit('capped-1');
    replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
  });
  after(async () => {
    for (const client of extra) client.close();
    await h.close();
  });

  /** A client on a connection of its own (a distinct channel option keeps grpc-js from sharing one). */
  function connection(): EvaluationQueryServiceClient {
    const client = new EvaluationQueryServiceClient(replica.address, credentials.createInsecure(), {
      'grpc.channel_id': extra.length,
    });
    extra.push(client);
    return client;
  }

  it('counts streams and min_position waits per connection and in all', async () => {
    const one = connection();
    const first = readStream(one.watchEvaluations({ statuses: [], evalIds: [] }));
    await first.next(); // its caught-up marker: the stream is open
    // A min_position wait for a position not written yet holds the connection's second place.
    const waiting = call(one, one.getEvaluation, { evalId: 'capped-1', minPosition: '1000' }, 3_000);
    waiting.catch(() => undefined);
    const refused = await expectError(firstMessage(one));
    expect(refused.code).to.equal(grpcStatus.RESOURCE_EXHAUSTED);
    expect(refused.details).to.contain('MAX_STREAMS_PER_CONNECTION');

    const two = connection();
    const second = readStream(two.watchEvaluations({ statuses: [], evalIds: [] }));
    await second.next();
    const third = readStream(two.watchEvaluation({ evalId: 'capped-1' }));
    await third.next();
    // Four open in all: a third connection is refused too.
    const full = await expectError(firstMessage(connection()));
    expect(full.code).to.equal(grpcStatus.RESOURCE_EXHAUSTED);
    expect(full.details).to.contain('MAX_STREAMS');

    first.cancel();
    await first.finished;
    // The server releases the place once it hears of the cancel: ask until it has (a round
    // trip each time).
    let again = readStream(one.watchEvaluations({ statuses: [], evalIds: [] }));
    for (let attempt = 1; ; attempt += 1) {
      const opened = await again.next().then(
        () => true,
        (err: { code?: number }) => {
          if (err.code !== grpcStatus.RESOURCE_EXHAUSTED || attempt >= 100) throw err;
          return false;
        },
      );
      if (opened) break;
      again = readStream(one.watchEvaluations({ statuses: [], evalIds: [] }));
    }
    for (const reader of [again, second, third]) reader.cancel();
    expect((await expectError(waiting)).code).to.equal(grpcStatus.DEADLINE_EXCEEDED);
  });
});

/** The first message of a new WatchEvaluations stream on `client`, or its error. */
async function firstMessage(client: EvaluationQueryServiceClient): Promise<unknown> {
  const reader = readStream(client.watchEvaluations({ statuses: [], evalIds: [] }));
  try {
    return await reader.next();
  } finally {
    reader.cancel();
  }
}
