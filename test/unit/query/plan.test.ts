import { expect } from 'chai';
import { evolve, type EvaluationEvent, type RecordedEvent } from '../../../shared/domain';
import {
  Evaluation,
  EvaluationUpdate,
  EvaluationStatus,
  EventType,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  encodeUpdate,
  FoldError,
  planRepair,
  GapError,
  planBatch,
  planSkip,
  updateFor,
  type PartitionSnapshot,
} from '../../../services/query/projection/plan';
import { facetMarker } from '../../../services/query/read-models/evaluation-list';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';
import {
  encodePartitionWrite,
  MAX_OP_ITEMS,
  STREAM_ITEMS,
  type PartitionWrite,
  WriteSet,
  type WriteOp,
} from '../../../services/query/read-models/write-ops';
import { encodeStruct, UpdateEncoder } from '../../../services/query/read-models/update-encoding';
import { Struct } from '../../../shared/generated/google/protobuf/struct';

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
  return (write?.ops.toOps() ?? []).filter((o) => o.op === op);
}

/** The records a write sets (the facet marker, set with a partition's first step, aside). */
function recordSets(write: PartitionWrite | undefined): Extract<WriteOp, { op: 'set' }>[] {
  return (opsOf(write, 'set') as Extract<WriteOp, { op: 'set' }>[]).filter((o) => o.key.includes(':eval:'));
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
    const sets = recordSets(write);
    expect(sets.map((o) => o.key)).to.deep.equal([one.record(0, 'a'), one.record(0, 'b')]);
    expect(opsOf(write, 'putAt')).to.have.length(3);
    const xadds = opsOf(write, 'xadd') as Extract<WriteOp, { op: 'xadd' }>[];
    expect(xadds.map((o) => o.position)).to.deep.equal(['1', '2', '3']);
    const last = EvaluationUpdate.decode(xadds[2]?.value ?? Buffer.alloc(0));
    expect(last).to.include({ revision: '2', position: '3', eventType: EventType.EVENT_TYPE_EVALUATION_STARTED });
    expect(last.evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_RUNNING);
    // a: queued and started in one batch, so listed once, where it ends (nothing to take out);
    // b: listed as queued.
    const QUEUED = EvaluationStatus.EVALUATION_STATUS_QUEUED;
    const RUNNING = EvaluationStatus.EVALUATION_STATUS_RUNNING;
    expect(opsOf(write, 'zrem')).to.deep.equal([]);
    const added = (opsOf(write, 'zadd') as Extract<WriteOp, { op: 'zadd' }>[]).map((o) => [o.key, o.member.slice(16)]);
    expect(added).to.have.deep.members([
      [one.indexAll(0, 'default'), 'a'],
      [one.indexStatus(0, 'default', RUNNING), 'a'],
      [one.indexFacet(0, 'default', RUNNING, 'language', 'python'), 'a'],
      [one.indexFacet(0, 'default', RUNNING, 'engine', 'docker'), 'a'],
      [one.indexFacet(0, 'default', RUNNING, 'executor', 'x'), 'a'],
      [one.indexAll(0, 'default'), 'b'],
      [one.indexStatus(0, 'default', QUEUED), 'b'],
      [one.indexFacet(0, 'default', QUEUED, 'language', 'python'), 'b'],
      [one.indexFacet(0, 'default', QUEUED, 'engine', 'docker'), 'b'],
    ]);
    // The first step on an empty partition says its facet indexes are whole; later ones do not touch it.
    expect(
      (opsOf(write, 'set') as Extract<WriteOp, { op: 'set' }>[]).find((o) => o.key === one.facets(0))?.value.toString(),
    ).to.equal(facetMarker(one));
    // The same start in a later batch moves `a` out of the queued indexes it is stored in.
    const later = planBatch(
      [next('a', 3, 2, started)],
      [{ checkpoint: 2n, states: new Map([['a', evolve(undefined, queued('a', 1))]]) }],
      one,
    );
    expect(opsOf(later.writes[0], 'set').map((o) => o.key)).to.not.include(one.facets(0));
    expect(opsOf(later.writes[0], 'zrem').map((o) => o.key)).to.deep.equal([
      one.indexStatus(0, 'default', QUEUED),
      one.indexFacet(0, 'default', QUEUED, 'language', 'python'),
      one.indexFacet(0, 'default', QUEUED, 'engine', 'docker'),
    ]);
  });

  it('stores the metadata in the first update only, and drops the history of an evaluation that ends', () => {
    const withMetadata = (event: RecordedEvent): RecordedEvent =>
      ({
        ...event,
        event: { ...event.event, data: { ...event.event.data, metadata: { big: 'x'.repeat(100) } } },
      }) as RecordedEvent;
    const completed: EvaluationEvent = {
      type: 'EvaluationCompleted',
      data: { exitCode: 0, completedAt: AT, output: { previewBase64: '', size: 0, location: '' } },
    };
    const events = [
      withMetadata(queued('a', 1)),
      next('a', 2, 2, started),
      withMetadata(queued('b', 3)),
      next('b', 4, 2, started),
      next('b', 5, 3, completed),
    ];
    const [write] = planBatch(events, empty(one), one).writes;
    const updates = (opsOf(write, 'xadd') as Extract<WriteOp, { op: 'xadd' }>[]).map((o) =>
      EvaluationUpdate.decode(o.value),
    );
    expect(updates.map((u) => [u.evaluation?.evalId, u.revision, u.evaluation?.metadata !== undefined])).to.deep.equal([
      ['a', '1', true],
      ['a', '2', false],
      ['b', '1', true],
      ['b', '2', false],
      ['b', '3', false],
    ]);
    // Records are whole, whatever update came last.
    for (const set of recordSets(write))
      expect(Evaluation.decode(set.value).metadata).to.deep.equal({ big: 'x'.repeat(100) });
    // a is running: its history holds both updates; b ended: no history, deleted instead.
    expect((opsOf(write, 'putAt') as Extract<WriteOp, { op: 'putAt' }>[]).map((o) => [o.key, o.index])).to.deep.equal([
      [one.history(0, 'a'), 0],
      [one.history(0, 'a'), 1],
    ]);
    expect(opsOf(write, 'del').map((o) => o.key)).to.deep.equal([one.history(0, 'b')]);
    // A repair of b writes its record and indexes, and no history.
    const repair = planRepair(
      events.filter((e) => e.evalId === 'b'),
      0,
      5n,
      one,
    );
    expect(opsOf(repair, 'putAt')).to.deep.equal([]);
    expect(opsOf(repair, 'del').map((o) => o.key)).to.deep.equal([one.history(0, 'b')]);
    expect(
      Evaluation.decode((opsOf(repair, 'set')[0] as Extract<WriteOp, { op: 'set' }>).value).metadata,
    ).to.deep.equal({
      big: 'x'.repeat(100),
    });
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

  it('reports every evaluation whose events do not follow the stored state in one FoldError', () => {
    const four = createKeyLayout('p', 4);
    const ghosts = ['g1', 'g2', 'g3', 'g4', 'g5', 'g6'];
    // Each ghost's first event here is its revision 2 (no state), then a revision 3 that is skipped.
    const events = [queued('ok', 1)];
    for (const id of ghosts) events.push(next(id, events.length + 1, 2, started));
    for (const id of ghosts) events.push(next(id, events.length + 1, 3, started));
    try {
      planBatch(events, empty(four), four);
      expect.fail('expected a FoldError');
    } catch (err) {
      expect(err).to.be.instanceOf(FoldError);
      const { failures } = err as FoldError;
      expect(failures.map((f) => f.evalId).sort()).to.deep.equal(ghosts);
      for (const failure of failures) {
        expect(failure).to.include({ partition: four.partitionOf(failure.evalId), checkpoint: 0n });
        expect(failure.reason).to.be.a('string').and.not.equal('');
      }
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
      expect(recordSets(write).map((o) => o.key)).to.deep.equal(mine.map((id) => four.record(write.partition, id)));
      // Every key of the write hashes to the partition's slot.
      const encoded = encodePartitionWrite(
        write,
        {
          checkpoint: four.checkpoint(write.partition),
          fence: four.fence(write.partition),
          counts: four.indexCounts(write.partition),
        },
        100,
      );
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

/** Reads back the MessagePack array encodePartitionWrite packs (array 32 of str and uint 32). */
function unpackOps(packed: string | Buffer | undefined): string[] {
  if (!Buffer.isBuffer(packed) || packed.length === 0) return [];
  expect(packed[0]).to.equal(0xdd);
  const items: string[] = [];
  let pos = 5;
  for (let i = 0; i < packed.readUInt32BE(1); i += 1) {
    const type = packed[pos++] ?? 0;
    let length: number;
    if (type === 0xce) {
      items.push(String(packed.readUInt32BE(pos)));
      pos += 4;
      continue;
    } else if ((type & 0xe0) === 0xa0) length = type & 0x1f;
    else if (type === 0xd9) length = packed[pos++] ?? 0;
    else if (type === 0xda) [length, pos] = [packed.readUInt16BE(pos), pos + 2];
    else if (type === 0xdb) [length, pos] = [packed.readUInt32BE(pos), pos + 4];
    else throw new Error(`unexpected type ${type}`);
    items.push(packed.toString('utf8', pos, pos + length));
    pos += length;
  }
  expect(pos).to.equal(packed.length);
  return items;
}

describe('planRepair (rewriting lost read models from the log)', () => {
  const one = createKeyLayout('p', 1);

  it('rewrites record, every history entry from index 0, and the index membership, at the same checkpoint', () => {
    const events = [queued('a', 1), next('a', 3, 2, started), queued('b', 4), next('a', 9, 3, started)];
    const write = planRepair(events, 0, 5n, one);
    expect(write).to.include({ partition: 0, expectedCheckpoint: 5n, newCheckpoint: 5n });
    const puts = opsOf(write, 'putAt') as Extract<WriteOp, { op: 'putAt' }>[];
    // Only events up to the checkpoint: a's revision 3 at position 9 is not applied yet.
    expect(puts.map((o) => [o.key, o.index])).to.deep.equal([
      [one.history(0, 'a'), 0],
      [one.history(0, 'a'), 1],
      [one.history(0, 'b'), 0],
    ]);
    const record = opsOf(write, 'set').find((o) => o.key === one.record(0, 'a')) as Extract<WriteOp, { op: 'set' }>;
    expect(Evaluation.decode(record.value)).to.include({
      revision: '2',
      status: EvaluationStatus.EVALUATION_STATUS_RUNNING,
    });
    const running = one.indexStatus(0, 'default', EvaluationStatus.EVALUATION_STATUS_RUNNING);
    const queuedIndex = one.indexStatus(0, 'default', EvaluationStatus.EVALUATION_STATUS_QUEUED);
    const added = opsOf(write, 'zadd').map(
      (o) => `${o.key} ${(o as { member: string }).member.endsWith(':a') ? 'a' : 'b'}`,
    );
    expect(added).to.include.members([`${one.indexAll(0, 'default')} a`, `${running} a`, `${queuedIndex} b`]);
    const removed = opsOf(write, 'zrem').map(
      (o) => `${o.key} ${(o as { member: string }).member.endsWith(':a') ? 'a' : 'b'}`,
    );
    expect(removed).to.include(`${queuedIndex} a`).and.not.include(`${running} a`);
  });
});

describe('encodePartitionWrite', () => {
  it('declares every key once, checkpoint first, and merges the ops of a key into variadic script ops', () => {
    const write: PartitionWrite = {
      partition: 0,
      expectedCheckpoint: 7n,
      newCheckpoint: 9n,
      ops: WriteSet.of([
        { op: 'set', key: 'k:rec', value: Buffer.from('r') },
        { op: 'zadd', key: 'k:all', member: 'm' },
        { op: 'zrem', key: 'k:q', member: 'm' },
        { op: 'putAt', key: 'k:hist', index: 4, value: Buffer.from('h') },
        {
          op: 'xadd',
          key: 'k:log',
          position: '8',
          value: Buffer.from('u'),
          meta: { evalId: 'e', status: 2, revision: '1' },
        },
        { op: 'putAt', key: 'k:hist', index: 5, value: Buffer.from('h'.repeat(300)) },
        {
          op: 'xadd',
          key: 'k:log',
          position: '9',
          value: Buffer.from('u'.repeat(70_000)),
          meta: { evalId: 'e', status: 2, revision: '1' },
        },
        { op: 'set', key: 'k:rec', value: Buffer.from('r2') },
      ]),
    };
    const { keys, args } = encodePartitionWrite(write, { checkpoint: 'k:cp', fence: 'k:f', counts: 'k:n' }, 1000);
    expect(keys).to.deep.equal(['k:cp', 'k:f', 'k:n', 'k:log', 'k:hist', 'k:all', 'k:q', 'k:rec']);
    expect(args.slice(0, 3)).to.deep.equal(['7', '9', '1000']);
    expect(args[4], 'no fence token: the live projection').to.equal('');
    expect(unpackOps(args[3])).to.deep.equal(
      ['X', '4', '2', '8-0', 'u', 'e', '2', '1', '9-0', 'u'.repeat(70_000), 'e', '2', '1']
        .concat(['L', '5', '3', '4', 'h', 'h'.repeat(300)])
        .concat(['Z', '6', '1', 'm'])
        .concat(['R', '7', '1', 'm'])
        .concat(['M', '1', '1', '8', 'r2']),
    );
  });

  it('sends an update once when it goes to the history and to the change log', () => {
    const update = Buffer.from('u');
    const write: PartitionWrite = {
      partition: 0,
      expectedCheckpoint: 4n,
      newCheckpoint: 5n,
      ops: WriteSet.of([
        { op: 'putAt', key: 'k:hist', index: 0, value: update },
        { op: 'xadd', key: 'k:log', position: '5', value: update, meta: { evalId: 'e', status: 2, revision: '1' } },
      ]),
    };
    const { keys, args } = encodePartitionWrite(write, { checkpoint: 'k:cp', fence: 'k:f', counts: 'k:n' }, 1000);
    expect(keys).to.deep.equal(['k:cp', 'k:f', 'k:n', 'k:log', 'k:hist']);
    // The list item is the (1-based) place of the stream entry's value.
    expect(unpackOps(args[3])).to.deep.equal(['X', '4', '1', '5-0', 'u', 'e', '2', '1', 'L', '5', '2', '0', '5']);
  });

  it('conditions a write on records instead of the checkpoint: their digests first, any checkpoint', () => {
    const { keys, args } = encodePartitionWrite(
      {
        partition: 0,
        expectedCheckpoint: 0n,
        newCheckpoint: 0n,
        ops: WriteSet.of([{ op: 'zadd', key: 'k:all', member: 'm' }]),
        ifUnchanged: new Map([['k:rec', 'ab12']]),
      },
      { checkpoint: 'k:cp', fence: 'k:f', counts: 'k:n' },
      1000,
    );
    expect(keys).to.deep.equal(['k:cp', 'k:f', 'k:n', 'k:rec', 'k:all']);
    expect(args.slice(0, 2)).to.deep.equal(['*', '']);
    expect(unpackOps(args[3])).to.deep.equal(['V', '1', '1', '4', 'ab12', 'Z', '5', '1', 'm']);
  });

  it('packs no ops as an empty argument (an idle partition only moves its checkpoint)', () => {
    const { keys, args } = encodePartitionWrite(
      { partition: 0, expectedCheckpoint: 0n, newCheckpoint: 1n, checkpointEvent: 'e@1@t', ops: new WriteSet() },
      { checkpoint: 'k:cp', fence: 'k:f', counts: 'k:n' },
      1000,
      'rebuild-token',
    );
    expect(keys).to.deep.equal(['k:cp', 'k:f', 'k:n']);
    expect(args).to.deep.equal(['0', '1 e@1@t', '1000', Buffer.alloc(0), 'rebuild-token']);
  });

  it('leaves the checkpoint as it is for a write that neither moves it nor names an event (a repair)', () => {
    const { args } = encodePartitionWrite(
      { partition: 0, expectedCheckpoint: 4n, newCheckpoint: 4n, ops: new WriteSet() },
      { checkpoint: 'k:cp', fence: 'k:f', counts: 'k:n' },
      1000,
    );
    expect(args.slice(0, 2)).to.deep.equal(['4', '']);
  });

  it('keeps a member in a sorted set exactly when the last op on it was zadd', () => {
    const ops: WriteOp[] = [
      { op: 'zadd', key: 'k:q', member: 'a' },
      { op: 'zadd', key: 'k:q', member: 'b' },
      { op: 'zrem', key: 'k:q', member: 'a' },
      { op: 'zrem', key: 'k:q', member: 'c' },
      { op: 'zadd', key: 'k:q', member: 'c' },
    ];
    const { args } = encodePartitionWrite(
      { partition: 0, expectedCheckpoint: 0n, newCheckpoint: 1n, ops: WriteSet.of(ops) },
      { checkpoint: 'k:cp', fence: 'k:f', counts: 'k:n' },
      1000,
    );
    expect(unpackOps(args[3])).to.deep.equal(['R', '4', '1', 'a', 'Z', '4', '2', 'b', 'c']);
  });

  it(`splits ops of more than ${MAX_OP_ITEMS} items (the Lua stack bounds unpack)`, () => {
    const count = MAX_OP_ITEMS * 2 + 1;
    const ops: WriteOp[] = [];
    for (let i = 1; i <= count; i += 1) {
      ops.push({ op: 'zadd', key: 'k:all', member: `m${i}` });
      ops.push({
        op: 'xadd',
        key: 'k:log',
        position: String(i),
        value: Buffer.from('u'),
        meta: { evalId: 'e', status: 2, revision: '1' },
      });
    }
    const { keys, args } = encodePartitionWrite(
      { partition: 0, expectedCheckpoint: 0n, newCheckpoint: BigInt(count), ops: WriteSet.of(ops) },
      { checkpoint: 'k:cp', fence: 'k:f', counts: 'k:n' },
      1000,
    );
    expect(keys).to.deep.equal(['k:cp', 'k:f', 'k:n', 'k:log', 'k:all']);
    const items = unpackOps(args[3]);
    const counts: string[] = [];
    for (let i = 0; i < items.length;) {
      const n = Number(items[i + 2]);
      counts.push(`${items[i]}${n}`);
      i += 3 + (items[i] === 'X' ? STREAM_ITEMS * n : n);
    }
    expect(counts).to.deep.equal([
      `X${MAX_OP_ITEMS}`,
      `X${MAX_OP_ITEMS}`,
      'X1',
      `Z${MAX_OP_ITEMS}`,
      `Z${MAX_OP_ITEMS}`,
      'Z1',
    ]);
  });
});

describe('encodeUpdate', () => {
  it('is byte for byte what ts-proto encodes for the update, and for the state (the record)', () => {
    const a1 = queued('a', 1);
    const a2 = next('a', 12345678901, 2, started);
    const s1 = evolve(undefined, a1);
    const s2 = evolve(s1, { ...a2, event: { ...started, data: { ...started.data, executorId: 'x'.repeat(300) } } });
    const encoder = new UpdateEncoder(16);
    for (const [event, state] of [
      [a1, s1],
      [a2, s2],
      [a1, s1],
    ] as const) {
      const { update, record } = encodeUpdate(event, state, encoder);
      expect(update.equals(EvaluationUpdate.encode(updateFor(event, state)).finish())).to.equal(true);
      expect(record.equals(Evaluation.encode(state).finish())).to.equal(true);
    }
  });

  it('is what ts-proto encodes for states with every field, unusual values, and appended one after another', () => {
    let seed = 7;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)] as T;
    const strings = [
      '',
      'a',
      'ü',
      '€uro',
      '😀',
      'x'.repeat(42),
      'é'.repeat(43),
      'y'.repeat(200),
      '\ud800',
      'q'.repeat(20_000),
    ];
    // Mostly values the fast path covers; now and then one it hands to ts-proto.
    const rarely =
      <T>(usual: readonly T[], unusual: readonly T[]): (() => T) =>
      () =>
        random() < 0.01 ? pick(unusual) : pick(usual);
    const int64 = rarely(
      ['0', '1', '127', '128', '16384', '4294967295', '4294967296', '9007199254740991'],
      ['9007199254740993', '9223372036854775807', '-1', '-300', '007'],
    );
    const int32 = rarely([0, 1, 127, 128, 300, 2147483647], [-1, -2147483648]);
    const date = rarely(
      [
        undefined,
        new Date(0),
        new Date(1),
        new Date(999),
        new Date(1000),
        new Date(Date.UTC(2026, 0, 1, 0, 0, 0, 123)),
        new Date(8.64e15),
      ],
      [new Date(-1), new Date(-1500)],
    );
    const metadatas = [
      undefined,
      {},
      { suite: 'bench', task: 7 },
      { nested: { a: [1, 'b', null, true] }, long: 'z'.repeat(300) },
    ];
    const events = [queued('a', 1), next('a', 2, 2, started), next('b', 9007199254740991, 99, started)];
    const big = { ...queued('c', 3), position: '9223372036854775807', revision: '-2' };
    const encoder = new UpdateEncoder(8);
    const expected: { update: Buffer; record: Buffer }[] = [];
    const places: ReturnType<UpdateEncoder['append']>[] = [];
    for (let i = 0; i < 400; i += 1) {
      const state: Evaluation = {
        ...Evaluation.fromPartial({}),
        evalId: pick(strings),
        status: int32(),
        codeHash: pick(strings),
        codeSize: int64(),
        language: pick(strings),
        engine: pick(strings),
        timeoutSeconds: int32(),
        executorId: pick(strings),
        containerId: pick(strings),
        exitCode: pick([undefined, int32()]),
        createdAt: date(),
        startedAt: date(),
        completedAt: date(),
        runtimeMs: int64(),
        outputPreview: pick([Buffer.alloc(0), Buffer.from('ok'), Buffer.alloc(300, 1)]),
        outputSize: int64(),
        outputLocation: pick(strings),
        errorPreview: pick(strings),
        errorSize: int64(),
        errorLocation: pick(strings),
        failureReason: int32(),
        cancelReason: pick(strings),
        metadata: pick(metadatas),
        revision: int64(),
        position: int64(),
        updatedAt: date(),
      };
      const event = pick([...events, big]);
      places.push(encoder.append(event, state));
      expected.push({
        update: Buffer.from(EvaluationUpdate.encode(updateFor(event, state)).finish()),
        record: Buffer.from(Evaluation.encode(state).finish()),
      });
      // Every few states a new buffer, as planBatch starts one per partition.
      if (i % 50 === 49) {
        const bytes = encoder.finish();
        places.forEach((at, j) => {
          expect(bytes.subarray(at.start, at.end).equals(expected[j]?.update as Buffer)).to.equal(true, `update ${j}`);
          expect(bytes.subarray(at.stateStart, at.stateEnd).equals(expected[j]?.record as Buffer)).to.equal(
            true,
            `record ${j}`,
          );
        });
        expect(bytes.length).to.equal(places[places.length - 1]?.end);
        expected.length = 0;
        places.length = 0;
        encoder.reset();
      }
    }
  });
});

describe('encodeStruct', () => {
  it('is what ts-proto encodes for Struct.wrap(object)', () => {
    const objects: Record<string, unknown>[] = [
      {},
      { suite: 'bench', task: 7 },
      { '': 'empty key', n: null, t: true, f: false, z: 0, neg: -0, pi: 3.14159, big: 1e300, s: '' },
      { list: [1, 'two', null, false, [3, [4]], { in: 'side' }, undefined], skipped: undefined },
      { ünïcode: 'naïve ☃ 😀', lone: '\ud800', long: 'x'.repeat(200), deep: { a: { b: { c: 'y'.repeat(300) } } } },
      JSON.parse('{"__proto__": {"x": 1}, "after": 2, "10": "int-like", "2": "first"}') as Record<string, unknown>,
      { many: Array.from({ length: 100 }, (_, i) => ({ i, s: 's'.repeat(i) })) },
    ];
    for (const object of objects) {
      const expected = Buffer.from(Struct.encode(Struct.wrap(object)).finish());
      expect(Buffer.from(encodeStruct(object)).equals(expected)).to.equal(true, JSON.stringify(object));
    }
    expect(() => encodeStruct({ f: () => 1 })).to.throw(/Unsupported any value type/);
  });
});

describe('planSkip (read models starting at the event log horizon)', () => {
  it('moves each partition below the horizon up to it, marking an empty one whole as a first step does', () => {
    const three = createKeyLayout('p', 3, ['suite']);
    const writes = planSkip([0n, 5n, 12n], 10n, three);
    expect(writes.map((w) => [w.partition, w.expectedCheckpoint, w.newCheckpoint, w.checkpointEvent])).to.deep.equal([
      [0, 0n, 10n, undefined],
      [1, 5n, 10n, undefined],
    ]);
    expect([...(writes[0]?.ops.sets ?? [])]).to.deep.equal([[three.facets(0), Buffer.from(facetMarker(three))]]);
    expect(writes[1]?.ops.sets.size, 'a partition with data keeps its marker as it is').to.equal(0);
  });
});
