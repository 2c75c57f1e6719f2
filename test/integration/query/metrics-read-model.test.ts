import { expect } from 'chai';
import { summarizeBatch, type MetricPoint } from '../../../shared/domain';
import { EvaluationStatus, EventType } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { WatchEvaluationResponse } from '../../../shared/generated/crucible/storage/v1/query_service';
import { createShutdown } from '../../../services/query/live/shutdown';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';
import { call, readStream, untilAnswered, type StreamReader } from '../../support/clients';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

const T0 = Date.UTC(2025, 5, 1);

function point(name: string, value: number, step?: number): MetricPoint {
  return {
    name,
    value,
    unit: 'u',
    timestamp: new Date(T0 + (step ?? 0)).toISOString(),
    ...(step !== undefined ? { step: String(step) } : {}),
  };
}

/** Every update up to the stream's end, or up to and including the first caught_up. */
async function updatesUntilCaughtUp(reader: StreamReader<WatchEvaluationResponse>): Promise<[string, EventType][]> {
  const got: [string, EventType][] = [];
  for (;;) {
    const m = await reader.next().catch(() => undefined);
    if (m === undefined || m.caughtUp !== undefined) return got;
    if (m.update !== undefined) got.push([m.update.revision, m.update.eventType]);
  }
}

describe('metric summaries in the read models', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let replica: Replica;
  let layout: KeyLayout;

  const caughtUpTo = (position: string): Promise<void> =>
    replica.service.hub.waitForPosition(BigInt(position), {
      signal: new AbortController().signal,
      shutdown: createShutdown().shutdown,
      deadline: undefined,
    });

  const record = (evalId: string, points: MetricPoint[]) =>
    h.writer.append(
      evalId,
      { type: 'EvaluationMetricsRecorded', data: { points: points.length, metrics: summarizeBatch(points) } },
      { publish: true },
    );

  const get = async (evalId: string) =>
    (await call(replica.client, replica.client.getEvaluation, { evalId })).evaluation;

  before(async () => {
    h = await createQueryHarness();
    layout = createKeyLayout(h.config.redisKeyPrefix, h.config.readModelPartitions);
    replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
  });

  after(async () => {
    await h.close();
  });

  it('sums every call up per name in the record, and watchers get one update per call', async () => {
    await h.writer.submit('mr-1', { publish: true });
    await h.writer.start('mr-1', { publish: true });
    const watcher = readStream(replica.client.watchEvaluation({ evalId: 'mr-1', afterRevision: '2' }));
    expect(await updatesUntilCaughtUp(watcher)).to.deep.equal([]);
    await record('mr-1', [point('loss', 2, 1), point('loss', 1, 2), point('acc', 0.5)]);
    await caughtUpTo((await record('mr-1', [point('loss', 3, 0), point('loss', 0.5, 3)])).position);

    const evaluation = await get('mr-1');
    expect(evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_RUNNING);
    expect(evaluation?.lastEventType).to.equal(EventType.EVENT_TYPE_METRICS_RECORDED);
    expect(evaluation?.metrics).to.deep.equal([
      {
        name: 'acc',
        unit: 'u',
        count: '1',
        min: 0.5,
        max: 0.5,
        lastValue: 0.5,
        lastStep: undefined,
        lastTimestamp: new Date(T0),
      },
      {
        name: 'loss',
        unit: 'u',
        count: '4',
        min: 0.5,
        max: 3,
        lastValue: 0.5,
        lastStep: '3',
        lastTimestamp: new Date(T0 + 3),
      },
    ]);
    const live: [string, EventType][] = [];
    while (live.length < 2) {
      const m = await watcher.next();
      if (m.update !== undefined) live.push([m.update.revision, m.update.eventType]);
    }
    expect(live).to.deep.equal([
      ['3', EventType.EVENT_TYPE_METRICS_RECORDED],
      ['4', EventType.EVENT_TYPE_METRICS_RECORDED],
    ]);
    watcher.cancel();
    expect(await h.differences(layout)).to.deep.equal([]);
  });

  it("late metrics after the end: the ended evaluation's last update is theirs, older ones come from the log", async () => {
    await h.writer.submit('mr-2', { publish: true });
    await h.writer.complete('mr-2', { publish: true });
    await caughtUpTo((await record('mr-2', [point('late', 7)])).position);
    const evaluation = await get('mr-2');
    expect(evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_COMPLETED);
    expect(evaluation?.metrics.map((m) => [m.name, m.count])).to.deep.equal([['late', '1']]);
    expect(await h.redis.exists(layout.history(layout.partitionOf('mr-2'), 'mr-2'))).to.equal(0);
    const current = await updatesUntilCaughtUp(readStream(replica.client.watchEvaluation({ evalId: 'mr-2' })));
    expect(current).to.deep.equal([['3', EventType.EVENT_TYPE_METRICS_RECORDED]]);
    const all = await updatesUntilCaughtUp(
      readStream(replica.client.watchEvaluation({ evalId: 'mr-2', afterRevision: '0' })),
    );
    expect(all).to.deep.equal([
      ['1', EventType.EVENT_TYPE_EVALUATION_QUEUED],
      ['2', EventType.EVENT_TYPE_EVALUATION_COMPLETED],
      ['3', EventType.EVENT_TYPE_METRICS_RECORDED],
    ]);
    expect(await h.differences(layout)).to.deep.equal([]);
  });

  it('rebuilds the same summaries from the log after Redis lost the read models', async () => {
    const before = await get('mr-1');
    await h.flushReadModels();
    const next = await h.writer.submit('mr-after-flush', { publish: true });
    await caughtUpTo(next.position);
    await replica.service.projector.whenCaughtUp();
    const { answer } = await untilAnswered(() => get('mr-1'));
    expect(answer).to.deep.equal(before);
    expect(await h.differences(layout)).to.deep.equal([]);
  });
});
