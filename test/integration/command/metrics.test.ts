import { expect } from 'chai';
import { FailedPreconditionError, NotFoundError, ValidationError } from '../../../shared/errors';
import type { MetricPoint } from '../../../shared/generated/crucible/storage/v1/command_service';
import { createHarness, denseLog, eventsOf, rejection, type Harness } from './harness';

/** The harness's clock: 2025-01-01T00:00:00Z plus one second per reading. */
const DAY_ONE = Date.UTC(2025, 0, 1);

function points(count: number, name = 'loss'): MetricPoint[] {
  return Array.from({ length: count }, (_, i) => ({
    name,
    value: 1 / (i + 1),
    unit: 'nats',
    step: String(i),
    timestamp: new Date(DAY_ONE + i),
  }));
}

describe('command executor: RecordMetrics in PostgreSQL', function () {
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    await h.close();
  });

  afterEach(async () => {
    const log = await denseLog(h.sql);
    expect(log.problems, 'event log stays dense').to.deep.equal([]);
  });

  async function storedPoints(
    evalId: string,
  ): Promise<{ name: string; value: number; step: string | null; revision: string }[]> {
    const { rows } = await h.sql.query<{ name: string; value: number; step: string | null; revision: string }>(
      `SELECT metric_name AS name, metric_value AS value, step::text AS step, revision::text AS revision
         FROM evaluation_metrics WHERE eval_id = $1 ORDER BY id`,
      [evalId],
    );
    return rows;
  }

  it('stores a call of 1,000 points as one event summing them up, and every point beside it', async () => {
    await h.commands.submit({ evalId: 'm-1' });
    await h.commands.start({ evalId: 'm-1' });
    const batch = [...points(999), { name: 'accuracy', value: 0.25, unit: '%', timestamp: new Date(DAY_ONE) }];
    const result = await h.commands.recordMetrics({ evalId: 'm-1', metrics: batch, requestId: 'm-1-a' });
    expect(result.revision).to.equal('3');

    const events = await eventsOf(h.sql, 'm-1');
    expect(events.map((e) => e.event_type)).to.deep.equal([
      'EvaluationQueued',
      'EvaluationStarted',
      'EvaluationMetricsRecorded',
    ]);
    expect(events[2]?.data).to.deep.equal({
      points: 1000,
      metrics: [
        {
          name: 'accuracy',
          unit: '%',
          count: 1,
          min: 0.25,
          max: 0.25,
          lastValue: 0.25,
          lastTimestamp: new Date(DAY_ONE).toISOString(),
        },
        {
          name: 'loss',
          unit: 'nats',
          count: 999,
          min: 1 / 999,
          max: 1,
          lastValue: 1 / 999,
          lastStep: '998',
          lastTimestamp: new Date(DAY_ONE + 998).toISOString(),
        },
      ],
    });
    const stored = await storedPoints('m-1');
    expect(stored).to.have.length(1000);
    expect(stored[0]).to.deep.equal({ name: 'loss', value: 1, step: '0', revision: '3' });
    expect(stored[999]).to.deep.equal({ name: 'accuracy', value: 0.25, step: null, revision: '3' });
    const { rows } = await h.sql.query<{ metric_names: string[]; status: string }>(
      'SELECT metric_names, status FROM evaluations WHERE eval_id = $1',
      ['m-1'],
    );
    expect(rows[0]).to.deep.equal({ metric_names: ['accuracy', 'loss'], status: 'running' });
  });

  it('answers a repeat (same request id, or the same content again) as the first time and stores nothing twice', async () => {
    await h.commands.submit({ evalId: 'm-2' });
    const first = await h.commands.recordMetrics({ evalId: 'm-2', metrics: points(3), requestId: 'm-2-a' });
    expect(await h.commands.recordMetrics({ evalId: 'm-2', metrics: points(3), requestId: 'm-2-a' })).to.deep.equal(
      first,
    );
    expect(await h.commands.recordMetrics({ evalId: 'm-2', metrics: points(3) })).to.deep.equal(first);
    expect(await storedPoints('m-2')).to.have.length(3);
    const second = await h.commands.recordMetrics({ evalId: 'm-2', metrics: points(2, 'f1') });
    expect(second.revision).to.equal('3');
    expect(await storedPoints('m-2')).to.have.length(5);
  });

  it('refuses bad points by index and field, an oversized batch, and an unknown evaluation, writing nothing', async () => {
    await h.commands.submit({ evalId: 'm-3' });
    const bad = [
      ...points(3),
      { name: 'x', value: Number.NaN, unit: '' },
      { name: '9lives', value: Number.POSITIVE_INFINITY, unit: 'u'.repeat(33), step: '-1' },
    ];
    const err = await rejection(() => h.commands.recordMetrics({ evalId: 'm-3', metrics: bad }));
    expect(err).to.be.instanceOf(ValidationError);
    expect((err as ValidationError).violations.map((v) => [v.field, v.rule])).to.deep.equal([
      ['metrics[3].value', 'FINITE'],
      ['metrics[4].name', 'PATTERN'],
      ['metrics[4].value', 'FINITE'],
      ['metrics[4].unit', 'TOO_LONG'],
      ['metrics[4].step', 'NOT_NEGATIVE'],
    ]);
    const tooMany = await rejection(() => h.commands.recordMetrics({ evalId: 'm-3', metrics: points(1001) }));
    expect((tooMany as ValidationError).violations.map((v) => [v.field, v.rule])).to.deep.equal([
      ['metrics', 'TOO_MANY'],
    ]);
    const empty = await rejection(() => h.commands.recordMetrics({ evalId: 'm-3', metrics: [] }));
    expect((empty as ValidationError).violations.map((v) => v.rule)).to.deep.equal(['REQUIRED']);
    expect(
      await rejection(() => h.commands.recordMetrics({ evalId: 'm-nobody', metrics: points(1) })),
    ).to.be.instanceOf(NotFoundError);
    const farFuture = [{ name: 'late', value: 1, unit: '', timestamp: new Date(DAY_ONE + 40 * 86_400_000) }];
    const future = await rejection(() => h.commands.recordMetrics({ evalId: 'm-3', metrics: farFuture }));
    expect((future as ValidationError).violations.map((v) => [v.field, v.rule])).to.deep.equal([
      ['metrics[0].timestamp', 'OUT_OF_RANGE'],
    ]);
    expect(await storedPoints('m-3')).to.deep.equal([]);
    expect((await eventsOf(h.sql, 'm-3')).map((e) => e.event_type)).to.deep.equal(['EvaluationQueued']);
  });

  it('takes late points within the grace period after the end, and keeps the status', async () => {
    await h.commands.submit({ evalId: 'm-4' });
    await h.commands.complete({ evalId: 'm-4', exitCode: 0 });
    const late = await h.commands.recordMetrics({ evalId: 'm-4', metrics: points(2) });
    expect(late.revision).to.equal('3');
    const { rows } = await h.sql.query<{ status: string; revision: string }>(
      'SELECT status, revision::text AS revision FROM evaluations WHERE eval_id = $1',
      ['m-4'],
    );
    expect(rows[0]).to.deep.equal({ status: 'completed', revision: '3' });
  });
});

describe('command executor: RecordMetrics limits from config', function () {
  let h: Harness;

  before(async () => {
    h = await createHarness({ METRICS_AFTER_TERMINAL_SECONDS: '0', MAX_METRIC_NAMES: '2' });
  });

  after(async () => {
    await h.close();
  });

  it('refuses points after the grace period (FAILED_PRECONDITION) and a name past the limit', async () => {
    await h.commands.submit({ evalId: 'ml-1' });
    await h.commands.cancel({ evalId: 'ml-1' });
    const closed = await rejection(() => h.commands.recordMetrics({ evalId: 'ml-1', metrics: points(1) }));
    expect(closed).to.be.instanceOf(FailedPreconditionError);
    expect((closed as Error).message).to.match(/ml-1 is cancelled since .*accepted until 0 s after it ends/);

    await h.commands.submit({ evalId: 'ml-2' });
    await h.commands.recordMetrics({ evalId: 'ml-2', metrics: [...points(1, 'a'), ...points(1, 'b')] });
    await h.commands.recordMetrics({ evalId: 'ml-2', metrics: points(1, 'b') });
    const third = await rejection(() => h.commands.recordMetrics({ evalId: 'ml-2', metrics: points(1, 'c') }));
    expect((third as ValidationError).violations.map((v) => [v.field, v.rule])).to.deep.equal([
      ['metrics[0].name', 'TOO_MANY_NAMES'],
    ]);
  });
});
