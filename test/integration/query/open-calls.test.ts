import { randomBytes } from 'node:crypto';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { credentials, status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import {
  EvaluationQueryServiceClient,
  OutputKind,
  type ReadOutputResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
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

  it('counts ReadOutput streams: past MAX_STREAMS_PER_CONNECTION a ReadOutput or a watch is refused', async () => {
    // Larger than what a stream holds on the way while its client does not read: it stays open.
    const body = randomBytes(32 * 1024 * 1024);
    const key = 'outputs/capped-output/output';
    await h.s3.send(new PutObjectCommand({ Bucket: h.config.s3.bucket, Key: key, Body: body }));
    await h.writer.submit('capped-output');
    await h.writer.putBody('capped-output', 'output', { s3Key: key, size: body.length });
    const one = connection();
    const held = [heldReadOutput(one), heldReadOutput(one)];
    for (const reader of held) await reader.first;

    const refused = await expectError(heldReadOutput(one).first);
    expect(refused.code).to.equal(grpcStatus.RESOURCE_EXHAUSTED);
    expect(refused.details).to.contain('MAX_STREAMS_PER_CONNECTION').and.to.contain('ReadOutput');
    expect((await expectError(firstMessage(one))).code).to.equal(grpcStatus.RESOURCE_EXHAUSTED);

    // Read to the end, they give their places back (before their status is sent): the
    // connection can open streams again.
    for (const reader of held) expect(await reader.finish()).to.equal(body.length);
    const again = heldReadOutput(one);
    await again.first;
    expect(await again.finish()).to.equal(body.length);
  });

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

/**
 * A ReadOutput of 'capped-output' that stops reading after its first message (`first`; rejects
 * with the call's error) until `finish()`, which reads the rest and resolves with the byte count.
 */
function heldReadOutput(client: EvaluationQueryServiceClient): {
  first: Promise<void>;
  finish(): Promise<number>;
} {
  const stream = client.readOutput({
    evalId: 'capped-output',
    kind: OutputKind.OUTPUT_KIND_OUTPUT,
    offset: '0',
    length: '0',
  });
  let bytes = 0;
  const first = new Promise<void>((resolve, reject) => {
    stream.once('data', () => {
      stream.pause();
      resolve();
    });
    stream.once('error', reject);
  });
  const ended = new Promise<number>((resolve, reject) => {
    stream.on('data', (message: ReadOutputResponse) => (bytes += message.chunk.length));
    stream.on('end', () => resolve(bytes));
    stream.on('error', (err: ServiceError) => reject(err));
  });
  ended.catch(() => undefined);
  return {
    first,
    finish() {
      stream.resume();
      return ended;
    },
  };
}

/** The first message of a new WatchEvaluations stream on `client`, or its error. */
async function firstMessage(client: EvaluationQueryServiceClient): Promise<unknown> {
  const reader = readStream(client.watchEvaluations({ statuses: [], evalIds: [] }));
  try {
    return await reader.next();
  } finally {
    reader.cancel();
  }
}
