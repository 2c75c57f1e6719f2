import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationFilter } from '../../../shared/generated/crucible/storage/v1/query_service';
import { facetMarker } from '../../../services/query/read-models/evaluation-list';
import { createKeyLayout, partitionNumbers, type KeyLayout } from '../../../services/query/read-models/keys';
import { call, untilAnswered } from '../../support/clients';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

const filter = (partial: Partial<EvaluationFilter>): EvaluationFilter => ({
  statuses: [],
  language: '',
  engine: '',
  executorId: '',
  metadata: {},
  ...partial,
});

/**
 * Read models built by a version without facet indexes, or before INDEXED_METADATA_KEYS named a
 * key, hold incomplete facet indexes: lists and counts that need them must refuse until the
 * index repair has filled them in from the records, then answer whole.
 */
describe('facet indexes of read models built without them', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let replica: Replica | undefined;
  const ids = Array.from({ length: 12 }, (_, i) => `fb-${String(i).padStart(2, '0')}`);
  const languageOf = (i: number): string => (i % 2 === 0 ? 'go' : 'rust');

  before(async () => {
    h = await createQueryHarness({ CATCH_UP_INTERVAL_MS: '60000', READ_MODEL_PARTITIONS: '2' });
    for (const [i, id] of ids.entries()) {
      await h.writer.append(id, {
        type: 'EvaluationQueued',
        data: {
          codeHash: createHash('sha256').update(id).digest('hex'),
          codeSize: 1,
          language: languageOf(i),
          engine: 'docker',
          timeoutSeconds: 30,
          metadata: { suite: i < 4 ? 'nightly' : 'weekly' },
          createdAt: new Date(Date.UTC(2025, 0, 1) + i * 1000).toISOString(),
        },
      });
    }
  });
  after(async () => {
    await replica?.close();
    await h.close();
  });

  const listIds = async (r: Replica, f: EvaluationFilter): Promise<string[]> =>
    (
      await call(r.client, r.client.listEvaluations, { status: 0, pageSize: 100, pageToken: '', filter: f })
    ).evaluations.map((e) => e.evalId);

  /** Deletes every facet index, its count and the marker: what a version before facets left. */
  const forgetFacets = async (layout: KeyLayout): Promise<void> => {
    for (const p of partitionNumbers(layout)) {
      const counted = Object.keys(await h.redis.hgetall(layout.indexCounts(p)));
      const facets = counted.filter((key) => layout.describeIndex(key)?.facet !== undefined);
      expect(facets.length, `partition ${p} had facet indexes`).to.be.greaterThan(0);
      await h.redis.del(...facets, layout.facets(p));
      await h.redis.hdel(layout.indexCounts(p), ...facets);
    }
  };

  it('an upgrade: refused at first, then every facet filled in from the records, and marked', async () => {
    const layout = createKeyLayout(h.config.redisKeyPrefix, 2);
    replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
    for (const p of partitionNumbers(layout)) expect(await h.redis.get(layout.facets(p))).to.equal(facetMarker(layout));
    await forgetFacets(layout);

    const go = filter({ statuses: [EvaluationStatus.EVALUATION_STATUS_QUEUED], language: 'go' });
    const { answer, refusals } = await untilAnswered(() => listIds(replica as Replica, go), 20_000);
    expect(refusals, 'the first read finds the facets incomplete').to.be.greaterThan(0);
    expect(answer).to.deep.equal(ids.filter((_, i) => languageOf(i) === 'go').reverse());
    const queue = await call(replica.client, replica.client.getQueueMetrics, {});
    expect(queue.byLanguage).to.deep.equal([
      { key: 'go', queued: '6', running: '0' },
      { key: 'rust', queued: '6', running: '0' },
    ]);
    for (const p of partitionNumbers(layout)) expect(await h.redis.get(layout.facets(p))).to.equal(facetMarker(layout));
    expect(await h.differences(layout)).to.deep.equal([]);
    await replica.close();
    replica = undefined;
  });

  it("an upgrade from indexes shared by every tenant (v1): every list refused at first, then the tenant's indexes filled in", async () => {
    const layout = createKeyLayout(h.config.redisKeyPrefix, 2);
    replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
    // What a version before tenants left: the same indexes without the tenant in their names.
    for (const p of partitionNumbers(layout)) {
      const counts = await h.redis.hgetall(layout.indexCounts(p));
      for (const key of Object.keys(counts)) {
        const legacy = key.replace(':index:default/', ':index:');
        if ((await h.redis.exists(key)) === 1) await h.redis.rename(key, legacy);
        await h.redis.hdel(layout.indexCounts(p), key);
        await h.redis.hset(layout.indexCounts(p), legacy, counts[key] as string);
      }
      await h.redis.set(layout.facets(p), JSON.stringify({ v: 1, metadata: [] }));
    }

    const { answer, refusals } = await untilAnswered(() => listIds(replica as Replica, filter({})), 20_000);
    expect(refusals, 'the first unfiltered list finds the indexes of another layout').to.be.greaterThan(0);
    expect(answer).to.deep.equal([...ids].reverse());
    const counted = await call(replica.client, replica.client.countEvaluations, { filter: filter({}) });
    expect(counted.count).to.equal(String(ids.length));
    for (const p of partitionNumbers(layout)) expect(await h.redis.get(layout.facets(p))).to.equal(facetMarker(layout));
    await replica.close();
    replica = undefined;
  });

  it('a metadata key indexed after the read models were built: filled in before a list by it answers', async () => {
    const layout = createKeyLayout(h.config.redisKeyPrefix, 2, ['suite']);
    replica = await h.startReplica({ overrides: { INDEXED_METADATA_KEYS: 'suite' } });
    await replica.service.projector.whenCaughtUp();
    const nightly = filter({ metadata: { suite: 'nightly' } });
    const { answer } = await untilAnswered(() => listIds(replica as Replica, nightly), 20_000);
    expect(answer).to.deep.equal(ids.slice(0, 4).reverse());
    const counted = await call(replica.client, replica.client.countEvaluations, { filter: nightly });
    expect(counted).to.include({ count: '4', exact: true });
    for (const p of partitionNumbers(layout)) expect(await h.redis.get(layout.facets(p))).to.equal(facetMarker(layout));
    expect(await h.differences(layout)).to.deep.equal([]);
  });
});
