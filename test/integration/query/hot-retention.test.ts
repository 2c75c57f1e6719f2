import { expect } from 'chai';
import { createPool } from '../../../shared/postgres';
import { EvaluationStatus, type Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  CountEvaluationsRequest,
  ListEvaluationsRequest,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { createPostgresEvaluationSource } from '../../../services/query/postgres/event-log';
import { checkConsistency } from '../../../services/query/projection/consistency-check';
import { pastHotRetention } from '../../../services/query/read-models/hot-retention';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';
import { call } from '../../support/clients';
import { until } from '../../support/until';
import { createEventWriter, type EventWriter } from './event-writer';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

const HOUR = 3_600_000;
const RETENTION = { HOT_RETENTION: '24h', HOT_SWEEP_INTERVAL_SECONDS: '1' };

describe('HOT_RETENTION: ended evaluations leave Redis, and are read from PostgreSQL as before', function () {
  this.timeout(30_000);
  let h: QueryHarness;
  let replica: Replica;
  let writer: EventWriter;
  let layout: KeyLayout;
  // The clock of the events written and of the replica's sweep: the test ages the data with it.
  let now: number;

  beforeEach(async () => {
    now = Date.UTC(2026, 0, 1);
    h = await createQueryHarness(RETENTION);
    writer = createEventWriter(h.sql, h.redis, h.config, () => new Date(now));
    layout = createKeyLayout(h.config.redisKeyPrefix, h.config.readModelPartitions, h.config.indexedMetadataKeys);
    replica = await h.startReplica({ overrides: RETENTION, service: { clock: () => now } });
  });
  afterEach(async () => {
    await h?.close();
  });

  const recordKey = (evalId: string): string => layout.record(layout.partitionOf(evalId), evalId);
  const inRedis = async (evalId: string): Promise<boolean> => (await h.redis.exists(recordKey(evalId))) === 1;

  async function read(evalId: string, minPosition?: string): Promise<Evaluation | undefined> {
    const answer = await call(replica.client, replica.client.getEvaluation, {
      evalId,
      ...(minPosition !== undefined ? { minPosition } : {}),
    });
    return answer.evaluation;
  }

  async function listed(): Promise<{ ids: string[]; coversEndedSince: Date | undefined }> {
    const page = await call(
      replica.client,
      replica.client.listEvaluations,
      ListEvaluationsRequest.fromPartial({ pageSize: 100 }),
    );
    return { ids: page.evaluations.map((e) => e.evalId).sort(), coversEndedSince: page.coversEndedSince };
  }

  /** The checker as the CLI runs it with the sweep on: what is past HOT_RETENTION must be out of Redis. */
  async function differences(): Promise<string[]> {
    const pool = createPool({ url: h.config.databaseUrl, poolSize: 2, applicationName: 'crucible-test-checker' });
    try {
      const hotMs = 24 * HOUR;
      const report = await checkConsistency({
        source: createPostgresEvaluationSource(pool),
        redis: h.redis,
        layout,
        keepsOut: (state) => pastHotRetention(state, now, hotMs),
      });
      return report.differences;
    } finally {
      await pool.end();
    }
  }

  it('takes out what ended before it, answers GetEvaluation as before, and lists and counts the rest, saying so', async () => {
    await writer.submit('done-old', { publish: true });
    await writer.start('done-old', { publish: true });
    await writer.complete('done-old', { publish: true });
    await writer.submit('running', { publish: true });
    let last = await writer.start('running', { publish: true });
    const before = await read('done-old', last.position);
    expect(before).to.include({ status: EvaluationStatus.EVALUATION_STATUS_COMPLETED });

    now += 23 * HOUR;
    await writer.submit('done-recent', { publish: true });
    last = await writer.cancel('done-recent', { publish: true });
    await read('done-recent', last.position);
    now += 2 * HOUR; // done-old ended 25 h ago, done-recent 2 h ago, running never

    await until('the sweep took done-old out of Redis', async () => !(await inRedis('done-old')));
    expect(await inRedis('done-recent'), 'ended 2 h ago').to.equal(true);
    expect(await inRedis('running')).to.equal(true);

    expect(await read('done-old'), 'the same state, folded from PostgreSQL').to.deep.equal(before);
    const list = await listed();
    expect(list.ids).to.deep.equal(['done-recent', 'running']);
    expect(list.coversEndedSince).to.deep.equal(new Date(now - 24 * HOUR));
    const completed = await call(
      replica.client,
      replica.client.countEvaluations,
      CountEvaluationsRequest.fromPartial({ filter: { statuses: [EvaluationStatus.EVALUATION_STATUS_COMPLETED] } }),
    );
    expect(completed).to.include({ count: '0', exact: true });
    expect(completed.coversEndedSince).to.deep.equal(new Date(now - 24 * HOUR));
    expect(await differences(), 'the indexes and their counts follow the sweep').to.deep.equal([]);
  });

  it('does not write back what it took out when its deletion is heard as a lost key', async () => {
    await writer.submit('done-old', { publish: true });
    const done = await writer.complete('done-old', { publish: true });
    await read('done-old', done.position);
    const before = await read('done-old');
    now += 25 * HOUR;
    await until('the sweep took done-old out of Redis', async () => !(await inRedis('done-old')));

    // A later step has run once this is applied: repairs asked for before it ran first.
    const later = await writer.submit('later', { publish: true });
    await read('later', later.position);
    expect(await inRedis('done-old'), 'the repair of a swept record writes nothing').to.equal(false);
    expect(await read('done-old')).to.deep.equal(before);
    expect(await differences()).to.deep.equal([]);
  });
});
