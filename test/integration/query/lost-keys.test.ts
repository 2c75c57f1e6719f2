import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type {
  WatchEvaluationResponse,
  EvaluationQueryServiceClient,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { createPostgresEvaluationSource } from '../../../services/query/postgres/event-log';
import { checkConsistency } from '../../../services/query/projection/consistency-check';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';
import { call, expectError, untilAnswered } from '../../support/clients';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

/** The first message of a WatchEvaluation stream, or its error. */
function firstWatchMessage(client: EvaluationQueryServiceClient, evalId: string): Promise<WatchEvaluationResponse> {
  return new Promise((resolve, reject) => {
    const stream = client.watchEvaluation({ evalId });
    stream.once('data', (message: WatchEvaluationResponse) => {
      resolve(message);
      stream.cancel();
    });
    stream.once('error', (err: Error & { code?: number }) => {
      if (err.code !== grpcStatus.CANCELLED) reject(err);
    });
  });
}

describe('query reads when Redis lost read-model keys: the truth or UNAVAILABLE, never NOT_FOUND or an empty page', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let layout: KeyLayout;
  let replica: Replica;

  before(async () => {
    // A minute between timer catch-ups and no keyspace events: only what a read notices can
    // start the repair (the last spec starts a replica that follows the events).
    h = await createQueryHarness({ CATCH_UP_INTERVAL_MS: '60000', REDIS_KEYSPACE_EVENTS: 'false' });
    layout = createKeyLayout(h.config.redisKeyPrefix, h.config.readModelPartitions);
    for (let i = 0; i < 12; i += 1) {
      await h.writer.submit(`lost-${i}`);
      if (i % 2 === 0) await h.writer.start(`lost-${i}`);
    }
    replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
  });
  after(async () => {
    await h.close();
  });

  async function consistency(): Promise<string[]> {
    const report = await checkConsistency({
      source: createPostgresEvaluationSource(replica.pool),
      redis: h.redis,
      layout,
    });
    return report.differences;
  }

  it('a record deleted by hand: GetEvaluation refuses, the record is rewritten from the log, then answers', async () => {
    const key = layout.record(layout.partitionOf('lost-2'), 'lost-2');
    expect(await h.redis.del(key)).to.equal(1);
    const refused = await expectError(call(replica.client, replica.client.getEvaluation, { evalId: 'lost-2' }));
    expect(refused.code).to.equal(grpcStatus.UNAVAILABLE);
    expect(refused.details).to.contain('lost-2').and.contain('rewritten from the event log');

    const { answer } = await untilAnswered(() =>
      call(replica.client, replica.client.getEvaluation, { evalId: 'lost-2' }),
    );
    expect(answer.evaluation).to.include({ evalId: 'lost-2', revision: '2' });
    expect(answer.evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_RUNNING);
    expect(await consistency()).to.deep.equal([]);
  });

  it('a history and its record deleted: WatchEvaluation refuses, both are rewritten with every revision once', async () => {
    const partition = layout.partitionOf('lost-4');
    expect(await h.redis.del(layout.history(partition, 'lost-4'), layout.record(partition, 'lost-4'))).to.equal(2);
    const refused = await expectError(firstWatchMessage(replica.client, 'lost-4'));
    expect(refused.code).to.equal(grpcStatus.UNAVAILABLE);
    const { answer } = await untilAnswered(() => firstWatchMessage(replica.client, 'lost-4'));
    expect(answer.update?.revision).to.equal('2');
    expect(await h.redis.llen(layout.history(partition, 'lost-4'))).to.equal(2);
    expect(await consistency()).to.deep.equal([]);
  });

  it('a history cut short while its record survives: WatchEvaluation refuses rather than replay a wrong current state', async () => {
    const partition = layout.partitionOf('lost-6');
    await h.redis.ltrim(layout.history(partition, 'lost-6'), 0, 0); // revision 2 lost, the record says 2
    const refused = await expectError(firstWatchMessage(replica.client, 'lost-6'));
    expect(refused.code).to.equal(grpcStatus.UNAVAILABLE);
    const { answer } = await untilAnswered(() => firstWatchMessage(replica.client, 'lost-6'));
    expect(answer.update?.revision).to.equal('2');
    expect(await h.redis.llen(layout.history(partition, 'lost-6'))).to.equal(2);
    expect(await consistency()).to.deep.equal([]);
  });

  it('keys deleted while nobody reads them are rewritten by themselves (Redis keyspace events)', async () => {
    const ids = ['lost-8', 'lost-9', 'lost-10'];
    const keys = ids.flatMap((id) => [
      layout.record(layout.partitionOf(id), id),
      layout.history(layout.partitionOf(id), id),
    ]);
    const watching = await h.startReplica({ overrides: { REDIS_KEYSPACE_EVENTS: 'true' } });
    await watching.service.projector.whenCaughtUp();
    expect(await h.redis.del(...keys)).to.equal(keys.length);
    // No read: the replica heard of the deletions. Asked until they are back (a round trip each).
    const until = Date.now() + 10_000;
    while ((await h.redis.exists(...keys)) < keys.length) {
      if (Date.now() > until) throw new Error('the deleted keys were not rewritten');
    }
    expect(await consistency()).to.deep.equal([]);
    await watching.close();
  });

  it('an id the log does not have is still NOT_FOUND', async () => {
    const missing = await expectError(
      call(replica.client, replica.client.getEvaluation, { evalId: 'never-submitted' }),
    );
    expect(missing.code).to.equal(grpcStatus.NOT_FOUND);
  });

  it('a flushed Redis: lookups and lists refuse until rebuilt, then answer the truth', async () => {
    // Hold the rebuild back (its read of the log waits for this lock) so that both reads meet
    // the empty Redis; neither may touch PostgreSQL to refuse.
    await h.sql.query('BEGIN');
    try {
      await h.sql.query('LOCK TABLE evaluation_events IN ACCESS EXCLUSIVE MODE');
      await h.flushReadModels();
      const lookup = await expectError(call(replica.client, replica.client.getEvaluation, { evalId: 'lost-7' }));
      expect(lookup.code).to.equal(grpcStatus.UNAVAILABLE);
      expect(lookup.details).to.contain('Redis lost data');
      // By now the replica knows it is rebuilding: the list waits for it within its deadline.
      const list = await expectError(
        call(
          replica.client,
          replica.client.listEvaluations,
          { status: EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED, pageSize: 50, pageToken: '' },
          1000,
        ),
      );
      expect(list.code).to.equal(grpcStatus.UNAVAILABLE);
    } finally {
      await h.sql.query('COMMIT');
    }

    // The refusals asked for a catch-up: the replica rebuilds without a timer or a new event.
    const { answer } = await untilAnswered(() =>
      call(replica.client, replica.client.listEvaluations, {
        status: EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED,
        pageSize: 50,
        pageToken: '',
      }),
    );
    expect(answer.evaluations.map((e) => e.evalId).sort()).to.deep.equal(
      Array.from({ length: 12 }, (_, i) => `lost-${i}`).sort(),
    );
    const { answer: found } = await untilAnswered(() =>
      call(replica.client, replica.client.getEvaluation, { evalId: 'lost-7' }),
    );
    expect(found.evaluation?.revision).to.equal('1');
    expect(await consistency()).to.deep.equal([]);
  });
});
