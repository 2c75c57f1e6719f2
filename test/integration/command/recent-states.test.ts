import { expect } from 'chai';
import { DEFAULT_TENANT } from '../../../shared/domain';
import { IllegalTransitionError, RevisionConflictError } from '../../../shared/errors';
import type { AppendOutcome, EvaluationStore } from '../../../services/command/application/ports';
import type { EvaluationSnapshot } from '../../../services/command/domain';
import { commandsOf, createHarness, denseLog, eventCount, eventsOf, rejection, type Harness } from './harness';

/** The store, counting its loads and keeping the state each append reports. */
function watched(store: EvaluationStore) {
  const seen = { loads: 0, states: [] as EvaluationSnapshot[] };
  const wrapped: EvaluationStore = {
    ...store,
    load: (evalId, requestId, tenant) => {
      seen.loads += 1;
      return store.load(evalId, requestId, tenant);
    },
    append: async (request) => {
      const outcome: AppendOutcome = await store.append(request);
      if (outcome.kind === 'appended' && outcome.state !== undefined) seen.states.push(outcome.state);
      return outcome;
    },
  };
  return { store: wrapped, seen };
}

describe('command executor: recent states (a command decided without a load first)', function () {
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    await h.close();
  });

  afterEach(async () => {
    expect((await denseLog(h.sql)).problems, 'event log stays dense').to.deep.equal([]);
  });

  it('reports, for every kind of write, the state a load reads right after it', async () => {
    const { store, seen } = watched(h.store);
    const executor = h.executorWith({ store });
    const commands = commandsOf(executor, h.env.config.limits);
    const loadNow = async (evalId: string): Promise<EvaluationSnapshot | undefined> =>
      (await h.store.load(evalId, undefined, DEFAULT_TENANT)).snapshot;
    const expectReported = async (evalId: string, what: string): Promise<void> => {
      expect(seen.states.at(-1), what).to.deep.equal(await loadNow(evalId));
    };

    await commands.submit({ evalId: 'rs-all', requestId: 'rs-all-submit' });
    await expectReported('rs-all', 'submit');
    await commands.start({ evalId: 'rs-all', executorId: 'exec-rs', containerId: 'c-rs' });
    await expectReported('rs-all', 'start (binds the executor)');
    await commands.recordMetrics({
      evalId: 'rs-all',
      metrics: [
        { name: 'loss', value: 0.5, unit: '', step: '1' },
        { name: 'acc', value: 0.9, unit: '', step: '1' },
      ],
    });
    await expectReported('rs-all', 'metrics (names)');
    await commands.recordSecurityEvent({
      containerCreated: { containerId: 'c-rs', evalId: 'rs-all', image: 'python:3.12' },
    });
    await expectReported('rs-all', 'container created');
    await commands.recordSecurityEvent({
      resourceViolation: { containerId: 'c-rs', evalId: 'rs-all', violationType: 1 },
    });
    await expectReported('rs-all', 'violation');
    await executor.execute({
      type: 'AppendLogSegment',
      evalId: 'rs-all',
      stream: 'stderr',
      offset: 0,
      data: Buffer.from('warming up\n'),
    });
    await expectReported('rs-all', 'log segment (its stream grows)');
    await commands.complete({ evalId: 'rs-all', output: Buffer.from('42\n') });
    await expectReported('rs-all', 'completion (ended)');

    await commands.submit({ evalId: 'rs-fail' });
    await commands.start({ evalId: 'rs-fail' });
    await commands.fail({ evalId: 'rs-fail', error: 'boom', exitCode: 1 });
    await expectReported('rs-fail', 'failure');
    await commands.submit({ evalId: 'rs-cancel' });
    await commands.cancel({ evalId: 'rs-cancel', reason: 'not needed' });
    await expectReported('rs-cancel', 'cancel');
  });

  it('starts and completes an evaluation it just submitted without loading it', async () => {
    const { store, seen } = watched(h.store);
    const commands = commandsOf(h.executorWith({ store }), h.env.config.limits);
    await commands.submit({ evalId: 'rs-quick' });
    await commands.start({ evalId: 'rs-quick' });
    await commands.recordMetrics({ evalId: 'rs-quick', metrics: [{ name: 'loss', value: 1, unit: '' }] });
    const done = await commands.complete({ evalId: 'rs-quick', output: Buffer.from('ok') });
    expect(seen.loads, 'loads').to.equal(0);
    expect(done.revision).to.equal('4');
    expect((await eventsOf(h.sql, 'rs-quick')).map((e) => e.event_type)).to.deep.equal([
      'EvaluationQueued',
      'EvaluationStarted',
      'EvaluationMetricsRecorded',
      'EvaluationCompleted',
    ]);
  });

  it('decides on the truth when another instance moved the evaluation: a conflict, a load, then its refusal', async () => {
    const mine = watched(h.store);
    const commands = commandsOf(h.executorWith({ store: mine.store }), h.env.config.limits);
    const other = commandsOf(h.executorWith({}), h.env.config.limits);
    await commands.submit({ evalId: 'rs-moved' });
    await commands.start({ evalId: 'rs-moved' });
    await other.cancel({ evalId: 'rs-moved', reason: 'stopped elsewhere' });
    const count = await eventCount(h.sql);

    const err = await rejection(() => commands.complete({ evalId: 'rs-moved', output: Buffer.from('late') }));
    expect(err).to.be.instanceOf(IllegalTransitionError);
    expect(mine.seen.loads, 'the stale guess was replaced by one load').to.equal(1);
    expect(await eventCount(h.sql)).to.equal(count);
  });

  it('writes on the truth when another instance moved it: metrics recorded meanwhile are kept', async () => {
    const mine = watched(h.store);
    const commands = commandsOf(h.executorWith({ store: mine.store }), h.env.config.limits);
    const other = commandsOf(h.executorWith({}), h.env.config.limits);
    await commands.submit({ evalId: 'rs-merge' });
    await commands.start({ evalId: 'rs-merge' });
    await other.recordMetrics({ evalId: 'rs-merge', metrics: [{ name: 'theirs', value: 1, unit: '' }] });

    const mineNow = await commands.recordMetrics({
      evalId: 'rs-merge',
      metrics: [{ name: 'mine', value: 2, unit: '' }],
    });
    expect(mineNow.revision).to.equal('4');
    expect(mine.seen.loads).to.equal(1);
    expect(mine.seen.states.at(-1)?.metricNames).to.deep.equal(['mine', 'theirs']);
  });

  it('checks expected_revision against the truth, not the guess', async () => {
    const commands = commandsOf(h.executorWith({}), h.env.config.limits);
    const other = commandsOf(h.executorWith({}), h.env.config.limits);
    await commands.submit({ evalId: 'rs-expected' });
    await commands.start({ evalId: 'rs-expected' });
    await other.recordMetrics({ evalId: 'rs-expected', metrics: [{ name: 'x', value: 1, unit: '' }] });

    // Its own guess says revision 2; the evaluation is at 3.
    const done = await commands.complete({ evalId: 'rs-expected', output: Buffer.from('ok'), expectedRevision: '3' });
    expect(done.revision).to.equal('4');
    const refused = await rejection(() =>
      commands.cancel({ evalId: 'rs-expected', reason: 'too late', expectedRevision: '3' }),
    );
    expect(refused).to.be.instanceOf(RevisionConflictError);
  });

  it('answers a retried command as a repeat, though its guess says the evaluation moved past it', async () => {
    const mine = watched(h.store);
    const commands = commandsOf(h.executorWith({ store: mine.store }), h.env.config.limits);
    await commands.submit({ evalId: 'rs-retry' });
    const started = await commands.start({ evalId: 'rs-retry', requestId: 'rs-retry-start' });
    await commands.recordMetrics({ evalId: 'rs-retry', metrics: [{ name: 'x', value: 1, unit: '' }] });
    const count = await eventCount(h.sql);

    expect(await commands.start({ evalId: 'rs-retry', requestId: 'rs-retry-start' })).to.deep.equal(started);
    expect(await eventCount(h.sql)).to.equal(count);
  });
});
