import { expect } from 'chai';
import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { createKeyLayout, INDEXED_STATUSES, partitionNumbers } from '../../../services/query/read-models/keys';
import { fnv1a32 } from '../../../shared/partitions';

/** The hash slot a key maps to is decided by its first non-empty {...} section. */
function hashTag(key: string): string {
  const open = key.indexOf('{');
  const close = key.indexOf('}', open + 1);
  return open === -1 || close <= open + 1 ? key : key.slice(open + 1, close);
}

describe('read-model key layout', () => {
  it('puts every key of a partition under the prefix and in one hash slot', () => {
    const layout = createKeyLayout('crucible', 4);
    for (const p of partitionNumbers(layout)) {
      const keys = [
        layout.checkpoint(p),
        layout.record(p, 'e1'),
        layout.indexAll(p, 'default'),
        ...INDEXED_STATUSES.map((s) => layout.indexStatus(p, 'default', s)),
        layout.history(p, 'e1'),
        layout.changeLog(p),
      ];
      for (const key of keys) {
        expect(key.startsWith('crucible:'), key).to.equal(true);
        expect(hashTag(key), key).to.equal(`crucible:${p}`);
      }
      expect(new Set(keys).size).to.equal(keys.length);
    }
  });

  it('names the keys as documented', () => {
    const layout = createKeyLayout('app', 1);
    expect(layout.checkpoint(0)).to.equal('app:{app:0}:checkpoint');
    expect(layout.record(0, 'e-1')).to.equal('app:{app:0}:eval:e-1');
    expect(layout.indexAll(0, 'default')).to.equal('app:{app:0}:index:default/all');
    expect(layout.indexStatus(0, 'default', EvaluationStatus.EVALUATION_STATUS_RUNNING)).to.equal(
      'app:{app:0}:index:default/running',
    );
    expect(layout.history(0, 'e-1')).to.equal('app:{app:0}:history:e-1');
    expect(layout.changeLog(0)).to.equal('app:{app:0}:changes');
    expect(layout.scanPattern).to.equal('app:{app:*}:*');
  });

  it('has no index for UNSPECIFIED or unknown statuses', () => {
    const layout = createKeyLayout('app', 1);
    expect(() => layout.indexStatus(0, 'default', EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED)).to.throw(RangeError);
    expect(() => layout.indexStatus(0, 'default', 42 as EvaluationStatus)).to.throw(RangeError);
  });

  it('keeps one partition by default and spreads ids evenly, stably, over several', () => {
    expect(createKeyLayout('p', 1).partitionOf('anything')).to.equal(0);
    const layout = createKeyLayout('p', 8);
    const counts = new Array<number>(8).fill(0);
    for (let i = 0; i < 8000; i += 1) {
      const p = layout.partitionOf(`eval-${i}`);
      expect(p).to.be.within(0, 7);
      counts[p] = (counts[p] ?? 0) + 1;
    }
    for (const c of counts) expect(c).to.be.within(800, 1200);
    // Stable across processes and versions: pinned values of FNV-1a.
    expect(fnv1a32('')).to.equal(0x811c9dc5);
    expect(fnv1a32('a')).to.equal(0xe40c292c);
    expect(fnv1a32('foobar')).to.equal(0xbf9cf968);
    expect(layout.partitionOf('foobar')).to.equal(0xbf9cf968 % 8);
  });

  it('refuses a partition count below one', () => {
    expect(() => createKeyLayout('p', 0)).to.throw(RangeError);
  });

  it('tells what a key of its prefix holds, and nothing of another prefix', () => {
    const layout = createKeyLayout('app', 4);
    expect(layout.describe(layout.record(2, 'e:1'))).to.deep.equal({ kind: 'record', partition: 2, evalId: 'e:1' });
    expect(layout.describe(layout.history(3, 'x'))).to.deep.equal({ kind: 'history', partition: 3, evalId: 'x' });
    expect(layout.describe(layout.checkpoint(1))).to.deep.equal({ kind: 'checkpoint', partition: 1 });
    expect(layout.describe(layout.fence(0))).to.deep.equal({ kind: 'fence', partition: 0 });
    expect(layout.describe(layout.changeLog(0))).to.deep.equal({ kind: 'changes', partition: 0 });
    expect(layout.describe(layout.indexAll(0, 'default'))).to.deep.equal({ kind: 'index', partition: 0 });
    for (const key of ['other:{other:0}:eval:x', 'app:{app:9}:eval:x', 'app:changes', 'app:{app:0}:weird'])
      expect(layout.describe(key), key).to.equal(undefined);
  });
});
