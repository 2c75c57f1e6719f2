import { expect } from 'chai';
import { Evaluation, EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  indexKeysOfEvaluation,
  indexKeysOfFilter,
  indexWrites,
  listFacets,
  listMember,
  matchesFilter,
  memberRange,
  mergePages,
  metadataFacetValue,
  type FacetValue,
  type ListFilter,
} from '../../../services/query/read-models/evaluation-list';
import { createKeyLayout } from '../../../services/query/read-models/keys';
import { WriteSet, type WriteOp } from '../../../services/query/read-models/write-ops';

const QUEUED = EvaluationStatus.EVALUATION_STATUS_QUEUED;
const RUNNING = EvaluationStatus.EVALUATION_STATUS_RUNNING;

function evaluation(evalId: string, createdMs: number, status = QUEUED): Evaluation {
  return Evaluation.fromPartial({ evalId, createdAt: new Date(createdMs), status });
}

describe('evaluation list read model', () => {
  describe('listMember', () => {
    it('orders lexicographically by creation time, then id', () => {
      const members = [
        listMember(evaluation('b', 2000)),
        listMember(evaluation('a', 10_000)),
        listMember(evaluation('c', 2000)),
        listMember(evaluation('z', 999)),
      ];
      expect([...members].sort()).to.deep.equal([
        listMember(evaluation('z', 999)),
        listMember(evaluation('b', 2000)),
        listMember(evaluation('c', 2000)),
        listMember(evaluation('a', 10_000)),
      ]);
      expect(listMember(evaluation('x', 1_763_877_600_123))).to.equal('001763877600123:x');
    });

    it('clamps times before 1970 to zero so the width never changes', () => {
      expect(listMember(evaluation('x', -5))).to.equal('000000000000000:x');
    });
  });

  describe('indexWrites', () => {
    const layout = createKeyLayout('p', 1);
    const opsOf = (before: Evaluation | undefined, after: Evaluation): WriteOp[] => {
      const ops = new WriteSet();
      indexWrites(layout, 0, before, after, ops);
      return ops.toOps();
    };
    const facets = { language: 'python', engine: 'docker' };
    it('adds a new evaluation to "all", to its status and to that status\' language and engine', () => {
      const e = { ...evaluation('e1', 1000), ...facets };
      const member = listMember(e);
      expect(opsOf(undefined, e)).to.deep.equal([
        { op: 'zadd', key: layout.indexAll(0, 'default'), member },
        { op: 'zadd', key: layout.indexStatus(0, 'default', QUEUED), member },
        { op: 'zadd', key: layout.indexFacet(0, 'default', QUEUED, 'language', 'python'), member },
        { op: 'zadd', key: layout.indexFacet(0, 'default', QUEUED, 'engine', 'docker'), member },
      ]);
    });
    it('moves it between the indexes of its status when the status changes, and does nothing otherwise', () => {
      const before = { ...evaluation('e1', 1000), ...facets };
      const after = { ...evaluation('e1', 1000, RUNNING), ...facets, executorId: 'x1' };
      const member = listMember(before);
      expect(opsOf(before, after)).to.deep.equal([
        { op: 'zrem', key: layout.indexStatus(0, 'default', QUEUED), member },
        { op: 'zrem', key: layout.indexFacet(0, 'default', QUEUED, 'language', 'python'), member },
        { op: 'zrem', key: layout.indexFacet(0, 'default', QUEUED, 'engine', 'docker'), member },
        { op: 'zadd', key: layout.indexStatus(0, 'default', RUNNING), member },
        { op: 'zadd', key: layout.indexFacet(0, 'default', RUNNING, 'language', 'python'), member },
        { op: 'zadd', key: layout.indexFacet(0, 'default', RUNNING, 'engine', 'docker'), member },
        { op: 'zadd', key: layout.indexFacet(0, 'default', RUNNING, 'executor', 'x1'), member },
      ]);
      expect(opsOf(after, after)).to.deep.equal([]);
      expect(opsOf(after, { ...after, revision: '9' })).to.deep.equal([]);
    });
    it('describes each index key, and nothing else', () => {
      expect(layout.describeIndex(layout.indexAll(0, 'default'))).to.deep.equal({ partition: 0, tenant: 'default' });
      expect(layout.describeIndex(layout.indexStatus(0, 'acme', RUNNING))).to.deep.equal({
        partition: 0,
        tenant: 'acme',
        status: RUNNING,
      });
      expect(layout.describeIndex(layout.indexFacet(0, 'default', RUNNING, 'executor', 'host:7:{x}'))).to.deep.equal({
        partition: 0,
        tenant: 'default',
        status: RUNNING,
        facet: 'executor',
        value: 'host:7:{x}',
      });
      for (const key of [
        layout.record(0, 'e1'),
        layout.indexCounts(0),
        'p:{p:1}:index:default/all',
        'p:{p:0}:index:default/nope',
        'p:{p:0}:index:all',
      ]) {
        expect(layout.describeIndex(key), key).to.equal(undefined);
      }
    });
  });

  describe('filters', () => {
    const layout = createKeyLayout('p', 1, ['suite']);
    const base: ListFilter = { tenant: 'default', statuses: [], facets: [], order: 'newest' };
    const e = Evaluation.fromPartial({
      evalId: 'e1',
      status: RUNNING,
      language: 'go',
      engine: 'docker',
      executorId: 'x1',
      metadata: { suite: 'nightly', n: 7 },
    });

    it("reads one index per status: the lead facet's, the status', or `all`", () => {
      expect(indexKeysOfFilter(layout, 0, base)).to.deep.equal([layout.indexAll(0, 'default')]);
      expect(indexKeysOfFilter(layout, 0, { ...base, statuses: [QUEUED, RUNNING] })).to.deep.equal([
        layout.indexStatus(0, 'default', QUEUED),
        layout.indexStatus(0, 'default', RUNNING),
      ]);
      const facets = listFacets([
        { facet: 'engine', value: 'docker' },
        { facet: 'executor', value: 'x1' },
      ]);
      expect(facets.map((f) => f.facet)).to.deep.equal(['executor', 'engine']);
      const byExecutor = indexKeysOfFilter(layout, 0, { ...base, facets });
      expect(byExecutor).to.have.length(5);
      expect(byExecutor[1]).to.equal(layout.indexFacet(0, 'default', RUNNING, 'executor', 'x1'));
    });

    it('bounds the members by creation time and by the cursor, in either order', () => {
      const after = new Date(1000);
      const before = new Date(5000);
      expect(memberRange({ ...base, createdAfter: after, createdBefore: before }, undefined)).to.deep.equal({
        low: '[000000000001000',
        high: '(000000000005000',
      });
      const cursor = '000000000003000:e9';
      expect(memberRange({ ...base, createdAfter: after }, cursor)).to.deep.equal({
        low: '[000000000001000',
        high: `(${cursor}`,
      });
      expect(memberRange({ ...base, order: 'oldest', createdBefore: before }, cursor)).to.deep.equal({
        low: `(${cursor}`,
        high: '(000000000005000',
      });
    });

    it('checks every facet on the record, metadata by its indexed text', () => {
      const facet = (f: FacetValue['facet'], value: string): ListFilter => ({ ...base, facets: [{ facet: f, value }] });
      expect(matchesFilter(e, { ...base, statuses: [RUNNING] })).to.equal(true);
      expect(matchesFilter(e, { ...base, statuses: [QUEUED] })).to.equal(false);
      expect(matchesFilter(e, facet('language', 'go'))).to.equal(true);
      expect(matchesFilter(e, facet('engine', 'gvisor'))).to.equal(false);
      expect(matchesFilter(e, facet('executor', 'x1'))).to.equal(true);
      expect(matchesFilter(e, facet('metadata', 'suite=nightly'))).to.equal(true);
      expect(matchesFilter(e, facet('metadata', 'n=7'))).to.equal(true);
      expect(matchesFilter(e, facet('metadata', 'suite=weekly'))).to.equal(false);
      expect(metadataFacetValue({ nested: true })).to.equal(undefined);
      expect(metadataFacetValue('x'.repeat(257))).to.equal(undefined);
    });

    it('lists an evaluation under an indexed metadata key of its status', () => {
      expect(indexKeysOfEvaluation(layout, 0, e)).to.include(
        layout.indexFacet(0, 'default', RUNNING, 'metadata', 'suite=nightly'),
      );
      expect(indexKeysOfEvaluation(layout, 0, e).filter((k) => k.includes(':metadata:'))).to.have.length(1);
    });
  });

  describe('mergePages', () => {
    it('returns the newest members of all partitions, in order, and whether more exist', () => {
      const p0 = ['0009:a', '0007:c', '0001:x'];
      const p1 = ['0008:b', '0002:y'];
      expect(mergePages([p0, p1], 3)).to.deep.equal({ members: ['0009:a', '0008:b', '0007:c'], hasMore: true });
      expect(mergePages([p0, p1], 5)).to.deep.equal({
        members: ['0009:a', '0008:b', '0007:c', '0002:y', '0001:x'],
        hasMore: false,
      });
      expect(mergePages([[], []], 5)).to.deep.equal({ members: [], hasMore: false });
    });

    it('pages through several partitions without loss or repetition', () => {
      // Each partition is fetched with limit pageSize+1 after the previous page's last member.
      const all = Array.from({ length: 47 }, (_, i) => `${String(1000 + i).padStart(15, '0')}:e${i}`);
      const partitions = [0, 1, 2].map((p) =>
        all
          .filter((_, i) => i % 3 === p)
          .sort()
          .reverse(),
      );
      const seen: string[] = [];
      let after: string | undefined;
      for (let guard = 0; guard < 20; guard += 1) {
        const pages = partitions.map((members) => members.filter((m) => after === undefined || m < after).slice(0, 11));
        const { members, hasMore } = mergePages(pages, 10);
        seen.push(...members);
        if (!hasMore) break;
        after = members[members.length - 1];
      }
      expect(seen).to.deep.equal([...all].reverse());
    });
  });
});
