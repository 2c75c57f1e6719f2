import { expect } from 'chai';
import type { RecordedEvent } from '../../../shared/domain';
import { Evaluation, EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { PartitionWrite } from '../../../services/query/read-models/write-ops';
import {
  createStateCache,
  createWritePipeline,
  rememberPlan,
  statesInMemory,
  type ExpectedReadModels,
  type WriteOutcome,
} from '../../../services/query/projection/rebuild';

const event = (position: number, evalId: string, revision: number): RecordedEvent => ({
  position: String(position),
  evalId,
  revision: String(revision),
  recordedAt: '2025-01-01T00:00:00.000Z',
  event: {
    type: 'EvaluationStarted',
    data: { executorId: 'x', containerId: 'c', startedAt: '2025-01-01T00:00:00.000Z' },
  },
});

const evaluation = (evalId: string, status: EvaluationStatus): Evaluation => Evaluation.fromPartial({ evalId, status });

/** Two partitions: ids starting with `a` in 0, the others in 1. */
const layout = { partitionOf: (id: string) => (id.startsWith('a') ? 0 : 1) };

function deferred(): { promise: Promise<WriteOutcome>; resolve: (outcome: WriteOutcome) => void } {
  let resolve: (outcome: WriteOutcome) => void = () => undefined;
  const promise = new Promise<WriteOutcome>((r) => (resolve = r));
  return { promise, resolve };
}

describe('rebuild parts', () => {
  describe('write pipeline', () => {
    it('settles oldest first down to `keep` and adds up what the writes applied', async () => {
      const pipeline = createWritePipeline();
      const writes = [deferred(), deferred(), deferred()];
      writes.forEach((w, i) => pipeline.send(w.promise, BigInt(10 * (i + 1))));
      expect(pipeline.sentUpTo).to.equal(30n);
      writes[0]?.resolve({ applied: 1, conflict: false });
      writes[1]?.resolve({ applied: 2, conflict: false });
      await pipeline.settle(1); // the third is still unanswered: keeping one must not wait for it
      expect(pipeline.applied).to.equal(3);
      writes[2]?.resolve({ applied: 4, conflict: false });
      await pipeline.settle(0);
      expect(pipeline.applied).to.equal(7);
      expect(pipeline.conflicted).to.equal(false);
    });

    it('keeps a conflict until resolved, and counts what was applied outside it', async () => {
      const pipeline = createWritePipeline();
      pipeline.send(Promise.resolve({ applied: 0, conflict: true }), 5n);
      pipeline.send(Promise.resolve({ applied: 2, conflict: false }), 9n);
      await pipeline.settle(0);
      expect([pipeline.conflicted, pipeline.applied]).to.deep.equal([true, 2]);
      pipeline.resolved();
      pipeline.count(5);
      expect([pipeline.conflicted, pipeline.applied]).to.deep.equal([false, 7]);
    });

    it('rejects the settle of a failed write, not before', async () => {
      const pipeline = createWritePipeline();
      pipeline.send(Promise.reject(new Error('redis down')), 1n);
      await new Promise((r) => setImmediate(r)); // no unhandled rejection meanwhile
      let failure: unknown;
      await pipeline.settle(0).catch((err: unknown) => (failure = err));
      expect((failure as Error).message).to.equal('redis down');
    });
  });

  describe('states in memory', () => {
    it('sorts a chunk into created, cached and missing evaluations, once each', () => {
      const cache = createStateCache(10);
      const cached = evaluation('b1', EvaluationStatus.EVALUATION_STATUS_RUNNING);
      cache.set('b1', cached);
      const expected: ExpectedReadModels = { checkpoints: [4n, 4n], cache };
      const chunk = [
        event(5, 'a-new', 1), // revision 1 above the checkpoint: created here
        event(6, 'b1', 3), // in the cache
        event(7, 'a2', 2), // neither: read from Redis
        event(8, 'a3', 5),
        event(9, 'b4', 2),
        event(10, 'a2', 3), // seen already
      ];
      const { states, missing, created } = statesInMemory(chunk, expected, layout, [0, 1]);
      expect([...created]).to.deep.equal([
        ['a-new', true],
        ['b1', false],
        ['a2', false],
        ['a3', false],
        ['b4', false],
      ]);
      expect(states.map((s) => [...s.keys()])).to.deep.equal([[], ['b1']]);
      expect(states[1]?.get('b1')).to.equal(cached);
      expect([...missing]).to.deep.equal([
        [0, ['a2', 'a3']],
        [1, ['b4']],
      ]);
    });

    it('reads a revision 1 at or below the checkpoint from Redis (written before)', () => {
      const expected: ExpectedReadModels = { checkpoints: [7n, 0n], cache: createStateCache(10) };
      const { missing, created } = statesInMemory([event(7, 'a1', 1), event(8, 'b1', 1)], expected, layout, [0, 1]);
      expect([...created]).to.deep.equal([
        ['a1', false],
        ['b1', true],
      ]);
      expect([...missing]).to.deep.equal([[0, ['a1']]]);
    });
  });

  describe('remember plan', () => {
    it('moves the checkpoints and keeps only unfinished states', () => {
      const cache = createStateCache(10);
      cache.set('a-done', evaluation('a-done', EvaluationStatus.EVALUATION_STATUS_RUNNING));
      const expected: ExpectedReadModels = { checkpoints: [1n, 1n], cache };
      const running = evaluation('b-run', EvaluationStatus.EVALUATION_STATUS_RUNNING);
      const write = { partition: 1, expectedCheckpoint: 1n, newCheckpoint: 9n } as PartitionWrite;
      rememberPlan(
        expected,
        {
          writes: [write],
          states: new Map([
            ['b-run', running],
            ['a-done', evaluation('a-done', EvaluationStatus.EVALUATION_STATUS_COMPLETED)],
            ['a-new-done', evaluation('a-new-done', EvaluationStatus.EVALUATION_STATUS_FAILED)],
          ]),
        },
        new Map([
          ['b-run', false],
          ['a-done', false],
          ['a-new-done', true],
        ]),
      );
      expect(expected.checkpoints).to.deep.equal([1n, 9n]);
      expect(cache.get('b-run')).to.equal(running);
      expect(cache.get('a-done')).to.equal(undefined);
      expect(cache.get('a-new-done')).to.equal(undefined);
    });
  });

  describe('state cache', () => {
    it('keeps about `size` of the most recent states, dropping the older generation whole', () => {
      const cache = createStateCache(4); // two generations of 2
      const ids = ['a', 'b', 'c', 'd', 'e'];
      for (const id of ids) cache.set(id, evaluation(id, EvaluationStatus.EVALUATION_STATUS_RUNNING));
      expect(ids.filter((id) => cache.get(id) !== undefined)).to.deep.equal(['c', 'd', 'e']);
      cache.delete('d');
      expect(cache.get('d')).to.equal(undefined);
      cache.clear();
      expect(ids.filter((id) => cache.get(id) !== undefined)).to.deep.equal([]);
    });

    it('keeps nothing when its size is 0', () => {
      const cache = createStateCache(0);
      cache.set('a', evaluation('a', EvaluationStatus.EVALUATION_STATUS_RUNNING));
      expect(cache.get('a')).to.equal(undefined);
    });
  });
});
