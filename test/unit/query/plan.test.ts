import { expect } from 'chai';
import { evolve, type EvaluationEvent, type RecordedEvent } from '../../../shared/domain';
import {
  EvaluationUpdate,
  EvaluationStatus,
  EventType,
  type Evaluation,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import { FoldError, GapError, planBatch, type PartitionSnapshot } from '../../../services/query/projection/plan';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';
import { encodePartitionWrite, type PartitionWrite, type WriteOp } from '../../../services/query/read-models/write-ops';

const AT = '2025-01-01T00:00:00.000Z';

function queued(evalId: string, position: number): RecordedEvent {
  return {
    position: String(position),
    evalId,
    revision: '1',
    recordedAt: AT,
    event: {
      type: 'EvaluationQueued',
      data: {
        codeHash: 'h',
        codeSize: 1,
        language: 'python',
        engine: 'docker',
        timeoutSeconds: 5,
        metadata: {},
        createdAt: AT,
      },
    },
  };
}

function next(evalId: string, position: number, revision: number, event: EvaluationEvent): RecordedEvent {
  return { position: String(position), evalId, revision: String(revision), recordedAt: AT, event };
}

const started: EvaluationEvent = {
  type: 'EvaluationStarted',
  data: { executorId: 'x', containerId: 'c', startedAt: AT },
};

function empty(layout: KeyLayout, checkpoint = 0n): PartitionSnapshot[] {
  return Array.from({ length: layout.partitions }, () => ({ checkpoint, states: new Map<string, Evaluation>() }));
}

function opsOf(write: PartitionWrite | undefined, op: WriteOp['op']): WriteOp[] {
  return (write?.ops ?? []).filter((o) => o.op === op);
}

describe('planBatch (pure projection step)', () => {
  const one = createKeyLayout('p', 1);

  it('folds a batch and writes record, indexes, history, change log and the checkpoint', () => {
    const events = [queued('a', 1), queued('b', 2), next('a', 3, 2, started)];
    const { writes, eventsPerPartition } = planBatch(events, empty(one), one);
    expect(writes).to.have.length(1);
    const [write] = writes;
    expect(write?.expectedCheckpoint).to.equal(0n);
    expect(write?.newCheckpoint).to.equal(3n);
    expect(eventsPerPartition.get(0)).to.equal(3);
    // Only the final state of each record is written.
    const sets = opsOf(write, 'set');
    expect(sets.map((o) => o.key)).to.deep.equal([one.record(0, 'a'), one.record(0, 'b')]);
    expect(opsOf(write, 'rpush')).to.have.length(3);
    const xadds = opsOf(write, 'xadd') as Extract<WriteOp, { op: 'xadd' }>[];
    expect(xadds.map((o) => o.position)).to.deep.equal(['1', '2', '3']);
    const last = EvaluationUpdate.decode(xadds[2]?.value ?? Buffer.alloc(0));
    expect(last).to.include({ revision: '2', position: '3', eventType: EventType.EVENT_TYPE_EVALUATION_STARTED });
    expect(last.evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_RUNNING);
    // a: added to all + queued, then moved queued -> running.
    expect(opsOf(write, 'zrem').map((o) => o.key)).to.deep.equal([
      one.indexStatus(0, EvaluationStatus.EVALUATION_STATUS_QUEUED),
    ]);
  });

  it('ignores events at or below the checkpoint (idempotent re-apply)', () => {
    const events = [queued('a', 1), queued('b', 2)];
    expect(planBatch(events, empty(one, 2n), one).writes).to.deep.equal([]);
    const partly = planBatch(
      [...events, next('a', 3, 2, started)],
      [{ checkpoint: 2n, states: new Map([['a', evolve(undefined, queued('a', 1))]]) }],
      one,
    );
    expect(partly.eventsPerPartition.get(0)).to.equal(1);
    expect(opsOf(partly.writes[0], 'xadd')).to.have.length(1);
  });

  it('refuses a batch that starts after the checkpoint + 1', () => {
    expect(() => planBatch([queued('a', 5)], empty(one, 3n), one)).to.throw(GapError);
    expect(() => planBatch([queued('a', 1), queued('b', 3)], empty(one), one)).to.throw(/not consecutive/);
  });

  it('reports an event that does not follow the stored state as a FoldError naming it', () => {
    try {
      planBatch([next('ghost', 1, 2, started)], empty(one), one);
      expect.fail('expected a FoldError');
    } catch (err) {
      expect(err).to.be.instanceOf(FoldError);
      expect(err).to.include({ evalId: 'ghost', partition: 0, checkpoint: 0n });
    }
  });

  it('with several partitions writes each its own events and advances idle ones too', () => {
    const four = createKeyLayout('p', 4);
    const ids = ['a', 'b', 'c', 'd', 'e', 'f'];
    const events = ids.map((id, i) => queued(id, i + 1));
    const { writes } = planBatch(events, empty(four), four);
    expect(writes.map((w) => w.partition)).to.deep.equal([0, 1, 2, 3]);
    for (const write of writes) {
      expect(write.newCheckpoint).to.equal(6n);
      const mine = ids.filter((id) => four.partitionOf(id) === write.partition);
      expect(opsOf(write, 'set').map((o) => o.key)).to.deep.equal(mine.map((id) => four.record(write.partition, id)));
      // Every key of the write hashes to the partition's slot.
      const encoded = encodePartitionWrite(write, four.checkpoint(write.partition), 100);
      for (const key of encoded.keys) expect(key).to.contain(`{p:${write.partition}}`);
    }
  });

  it('lets each partition resume from its own checkpoint when they diverged', () => {
    const two = createKeyLayout('p', 2);
    const ids = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
    const events = ids.map((id, i) => queued(id, i + 1));
    // Partition 0 applied up to 5 already (its states are what it applied), partition 1 up to 2.
    const snapshots: PartitionSnapshot[] = [0, 1].map((p) => {
      const checkpoint = p === 0 ? 5n : 2n;
      const states = new Map<string, Evaluation>();
      events.forEach((e) => {
        if (two.partitionOf(e.evalId) === p && BigInt(e.position) <= checkpoint)
          states.set(e.evalId, evolve(undefined, e));
      });
      return { checkpoint, states };
    });
    const { writes, eventsPerPartition } = planBatch(events.slice(2), snapshots, two);
    const expectedFor = (p: number, above: number): string[] =>
      events.filter((e) => two.partitionOf(e.evalId) === p && Number(e.position) > above).map((e) => e.position);
    const positions = (p: number): string[] =>
      (
        opsOf(
          writes.find((w) => w.partition === p),
          'xadd',
        ) as Extract<WriteOp, { op: 'xadd' }>[]
      ).map((o) => o.position);
    expect(positions(0)).to.deep.equal(expectedFor(0, 5));
    expect(positions(1)).to.deep.equal(expectedFor(1, 2));
    expect(eventsPerPartition.get(0)).to.equal(expectedFor(0, 5).length);
    expect(writes.map((w) => w.expectedCheckpoint)).to.deep.equal([5n, 2n]);
  });
});

describe('encodePartitionWrite', () => {
  it('declares every key once, checkpoint first, and refers to keys by index', () => {
    const write: PartitionWrite = {
      partition: 0,
      expectedCheckpoint: 7n,
      newCheckpoint: 9n,
      ops: [
        { op: 'set', key: 'k:rec', value: Buffer.from('r') },
        { op: 'zadd', key: 'k:all', member: 'm' },
        { op: 'zrem', key: 'k:q', member: 'm' },
        { op: 'rpush', key: 'k:hist', value: Buffer.from('h') },
        { op: 'xadd', key: 'k:log', position: '9', value: Buffer.from('u') },
        { op: 'set', key: 'k:rec', value: Buffer.from('r2') },
      ],
    };
    const { keys, args } = encodePartitionWrite(write, 'k:cp', 1000);
    expect(keys).to.deep.equal(['k:cp', 'k:rec', 'k:all', 'k:q', 'k:hist', 'k:log']);
    expect(args.map(String)).to.deep.equal([
      '7',
      '9',
      '1000',
      'S',
      '2',
      'r',
      'Z',
      '3',
      'm',
      'R',
      '4',
      'm',
      'L',
      '5',
      'h',
      'X',
      '6',
      '9-0',
      'u',
      'S',
      '2',
      'r2',
    ]);
  });
});
