import { expect } from 'chai';
import { ValidationError } from '../../../shared/errors';
import { Evaluation, EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  decodePageToken,
  encodePageToken,
  indexWrites,
  listMember,
  mergePages,
} from '../../../services/query/read-models/evaluation-list';
import { createKeyLayout } from '../../../services/query/read-models/keys';
import { WriteSet, type WriteOp } from '../../../services/query/read-models/write-ops';

const QUEUED = EvaluationStatus.EVALUATION_STATUS_QUEUED;
const RUNNING = EvaluationStatus.EVALUATION_STATUS_RUNNING;

function evaluation(evalId: string, createdMs: number, status = QUEUED): Evaluation {
  return Evaluation.fromPartial({ evalId, createdAt: new Date(createdMs), status });
}

function violationOf(fn: () => unknown): { field: string; rule: string } {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(ValidationError);
    const v = (err as ValidationError).violations[0];
    return { field: v?.field ?? '', rule: v?.rule ?? '' };
  }
  throw new Error('expected a ValidationError');
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
        { op: 'zadd', key: layout.indexAll(0), member },
        { op: 'zadd', key: layout.indexStatus(0, QUEUED), member },
        { op: 'zadd', key: layout.indexFacet(0, QUEUED, 'language', 'python'), member },
        { op: 'zadd', key: layout.indexFacet(0, QUEUED, 'engine', 'docker'), member },
      ]);
    });
    it('moves it between the indexes of its status when the status changes, and does nothing otherwise', () => {
      const before = { ...evaluation('e1', 1000), ...facets };
      const after = { ...evaluation('e1', 1000, RUNNING), ...facets, executorId: 'x1' };
      const member = listMember(before);
      expect(opsOf(before, after)).to.deep.equal([
        { op: 'zrem', key: layout.indexStatus(0, QUEUED), member },
        { op: 'zrem', key: layout.indexFacet(0, QUEUED, 'language', 'python'), member },
        { op: 'zrem', key: layout.indexFacet(0, QUEUED, 'engine', 'docker'), member },
        { op: 'zadd', key: layout.indexStatus(0, RUNNING), member },
        { op: 'zadd', key: layout.indexFacet(0, RUNNING, 'language', 'python'), member },
        { op: 'zadd', key: layout.indexFacet(0, RUNNING, 'engine', 'docker'), member },
        { op: 'zadd', key: layout.indexFacet(0, RUNNING, 'executor', 'x1'), member },
      ]);
      expect(opsOf(after, after)).to.deep.equal([]);
      expect(opsOf(after, { ...after, revision: '9' })).to.deep.equal([]);
    });
    it('describes each index key, and nothing else', () => {
      expect(layout.describeIndex(layout.indexAll(0))).to.deep.equal({ partition: 0 });
      expect(layout.describeIndex(layout.indexStatus(0, RUNNING))).to.deep.equal({ partition: 0, status: RUNNING });
      expect(layout.describeIndex(layout.indexFacet(0, RUNNING, 'executor', 'host:7:{x}'))).to.deep.equal({
        partition: 0,
        status: RUNNING,
        facet: 'executor',
        value: 'host:7:{x}',
      });
      for (const key of [layout.record(0, 'e1'), layout.indexCounts(0), 'p:{p:1}:index:all', 'p:{p:0}:index:nope']) {
        expect(layout.describeIndex(key), key).to.equal(undefined);
      }
    });
  });

  describe('page tokens', () => {
    it('round-trip the status and the last member, opaquely', () => {
      const token = encodePageToken({ status: RUNNING, after: '001763877600123:e-9' });
      expect(token).to.match(/^[A-Za-z0-9_-]+$/);
      expect(decodePageToken(token, RUNNING)).to.deep.equal({ status: RUNNING, after: '001763877600123:e-9' });
    });

    it('refuse garbage with INVALID on page_token', () => {
      for (const token of [
        'not a token',
        'bm90IGpzb24',
        encodePageToken({ status: QUEUED, after: 'no-digits' }),
        '!!',
      ]) {
        expect(
          violationOf(() => decodePageToken(token, QUEUED)),
          token,
        ).to.deep.equal({ field: 'page_token', rule: 'INVALID' });
      }
      const wrongVersion = Buffer.from(JSON.stringify({ v: 2, s: 1, a: '001763877600123:e' })).toString('base64url');
      expect(violationOf(() => decodePageToken(wrongVersion, QUEUED)).rule).to.equal('INVALID');
    });

    it('refuse a token issued for another status with MISMATCH', () => {
      const token = encodePageToken({ status: QUEUED, after: '001763877600123:e' });
      expect(violationOf(() => decodePageToken(token, RUNNING))).to.deep.equal({
        field: 'page_token',
        rule: 'MISMATCH',
      });
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
