import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { captureLog } from '../../support/log-capture';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';
import { call, untilAnswered } from '../../support/clients';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

const EVALUATIONS = 40;
const ids = Array.from({ length: EVALUATIONS }, (_, i) => `idx-${String(i).padStart(3, '0')}`);

describe('indexes that lose members: lists refuse until the indexes are rebuilt from the records', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let layout: KeyLayout;
  let replica: Replica;
  const log = captureLog();
  const logged = (pattern: RegExp): Promise<void> => log.next(pattern);

  const listAll = async (status = EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED): Promise<string[]> => {
    const { evaluations } = await call(replica.client, replica.client.listEvaluations, {
      status,
      pageSize: 1000,
      pageToken: '',
    });
    return evaluations.map((e) => e.evalId).sort();
  };

  const checker = (): Promise<string[]> => h.differences(layout);

  before(async () => {
    // No timer audits within a test (5 × a minute) and no keyspace events: only what a read
    // notices starts the repair, until the spec that turns the events on.
    h = await createQueryHarness({ CATCH_UP_INTERVAL_MS: '60000', REDIS_KEYSPACE_EVENTS: 'false' });
    layout = createKeyLayout(h.config.redisKeyPrefix, h.config.readModelPartitions);
    for (const [i, id] of ids.entries()) {
      await h.writer.submit(id);
      if (i % 2 === 0) await h.writer.start(id);
      if (i % 4 === 0) await h.writer.complete(id);
    }
    replica = await h.startReplica({ logger: log.logger });
    await replica.service.projector.whenCaughtUp();
    expect(await listAll()).to.deep.equal(ids);
    expect(await checker()).to.deep.equal([]);
  });
  after(async () => {
    await h.close();
  });

  it('a member deleted from an index by hand: the list refuses, the read starts the repair, then the truth', async () => {
    const members = await h.redis.zrange(layout.indexAll(0, 'default'), 0, -1);
    const running = await h.redis.zrange(
      layout.indexStatus(0, 'default', EvaluationStatus.EVALUATION_STATUS_RUNNING),
      0,
      -1,
    );
    await h.redis.zrem(layout.indexAll(0, 'default'), members[3] as string, members[17] as string);
    await h.redis.zrem(
      layout.indexStatus(0, 'default', EvaluationStatus.EVALUATION_STATUS_RUNNING),
      running[0] as string,
    );
    // A stray: an evaluation that is queued, put in the running index as well.
    const queued = await h.redis.zrange(
      layout.indexStatus(0, 'default', EvaluationStatus.EVALUATION_STATUS_QUEUED),
      0,
      0,
    );
    await h.redis.zadd(
      layout.indexStatus(0, 'default', EvaluationStatus.EVALUATION_STATUS_RUNNING),
      0,
      queued[0] as string,
    );

    const repaired = logged(/an index differed from its count/);
    const first = await listAll().then(
      () => undefined,
      (err: { code?: number; details?: string }) => err,
    );
    expect(first?.code, 'the first list after the loss').to.equal(grpcStatus.UNAVAILABLE);
    expect(first?.details).to.match(/lost members/);
    await repaired;
    const { answer } = await untilAnswered(() => listAll());
    expect(answer).to.deep.equal(ids);
    const runningNow = await untilAnswered(() => listAll(EvaluationStatus.EVALUATION_STATUS_RUNNING));
    expect(runningNow.answer).to.deep.equal(ids.filter((_, i) => i % 2 === 0 && i % 4 !== 0));
    expect(await checker()).to.deep.equal([]);
  });

  it('repairs while steps move other evaluations: each page waits only for the records it was decided from', async () => {
    const members = await h.redis.zrange(layout.indexAll(0, 'default'), 0, -1);
    await h.redis.zrem(layout.indexAll(0, 'default'), ...members.slice(0, 10));
    const repaired = logged(/an index differed from its count/);
    // A burst of new evaluations, each moving the checkpoint, while the repair runs.
    let burst = true;
    const writing = (async () => {
      for (let i = 0; burst && i < 2000; i += 1)
        await h.writer.submit(`idx-burst-${String(i).padStart(4, '0')}`, { publish: true });
    })();
    await listAll().catch(() => undefined); // the read notices and asks for the repair
    await repaired;
    burst = false;
    await writing;
    await replica.service.projector.whenCaughtUp();
    const { answer } = await untilAnswered(() => listAll());
    expect(answer.filter((id) => !id.startsWith('idx-burst-'))).to.deep.equal(ids);
    expect(await checker()).to.deep.equal([]);
  });

  it('the checker names an index that differs from its count', async () => {
    const members = await h.redis.zrange(layout.indexAll(0, 'default'), 0, -1);
    await h.redis.zrem(layout.indexAll(0, 'default'), members[5] as string);
    const differences = await checker();
    expect(differences.some((d) => /index:default\/all holds \d+ members, its count says \d+/.test(d))).to.equal(true);
    const repaired = logged(/an index differed from its count/);
    await listAll().catch(() => undefined); // the read notices and asks for the repair
    await repaired;
    expect(await checker()).to.deep.equal([]);
  });

  it('whole indexes and their counts deleted, nobody reading: rebuilt from the records at once (keyspace events)', async () => {
    const watching = await h.startReplica({
      overrides: { REDIS_KEYSPACE_EVENTS: 'true' },
      logger: log.logger,
    });
    try {
      await watching.service.projector.whenCaughtUp();
      let repaired = logged(/an index differed from its count/);
      await h.redis.del(
        layout.indexStatus(0, 'default', EvaluationStatus.EVALUATION_STATUS_COMPLETED),
        layout.indexAll(0, 'default'),
      );
      await repaired;
      expect(await checker()).to.deep.equal([]);
      // The counts alone (a Redis written by a version without them): counted from the indexes.
      repaired = logged(/indexes without counts/);
      await h.redis.del(layout.indexCounts(0));
      await repaired;
      expect(await h.redis.hlen(layout.indexCounts(0))).to.equal(6);
      expect(await checker()).to.deep.equal([]);
      expect((await listAll()).filter((id) => !id.startsWith('idx-burst-'))).to.deep.equal(ids);
    } finally {
      await watching.close();
    }
  });
});
