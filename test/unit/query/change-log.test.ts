import { expect } from 'chai';
import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  contiguousRun,
  decodeChangeLogEntry,
  positionOfEntryId,
  type ChangeLogEntry,
} from '../../../services/query/read-models/change-log';

const entry = (position: number): ChangeLogEntry => ({
  position: BigInt(position),
  update: EvaluationUpdate.fromPartial({ position: String(position) }),
});

describe('change log', () => {
  it('reads positions from entry ids', () => {
    expect(positionOfEntryId('42-0')).to.equal(42n);
    expect(positionOfEntryId('9007199254740993-0')).to.equal(9007199254740993n);
  });

  it('decodes an entry from its field list', () => {
    const update = EvaluationUpdate.fromPartial({ position: '5', revision: '2' });
    const decoded = decodeChangeLogEntry(Buffer.from('5-0'), [
      Buffer.from('u'),
      Buffer.from(EvaluationUpdate.encode(update).finish()),
    ]);
    expect(decoded.position).to.equal(5n);
    expect(decoded.update).to.deep.include({ position: '5', revision: '2' });
    expect(() => decodeChangeLogEntry('6-0', [])).to.throw(/no update/);
  });

  describe('contiguousRun', () => {
    it('takes consecutive positions after the cursor', () => {
      const { run, gap } = contiguousRun([entry(4), entry(5), entry(6)], 3n);
      expect(run.map((e) => e.position)).to.deep.equal([4n, 5n, 6n]);
      expect(gap).to.equal(false);
    });
    it('skips what is at or below the cursor', () => {
      expect(contiguousRun([entry(2), entry(3), entry(4)], 3n).run.map((e) => e.position)).to.deep.equal([4n]);
    });
    it('stops at a missing position and says so', () => {
      const { run, gap } = contiguousRun([entry(4), entry(6), entry(7)], 3n);
      expect(run.map((e) => e.position)).to.deep.equal([4n]);
      expect(gap).to.equal(true);
      expect(contiguousRun([entry(9)], 3n)).to.deep.equal({ run: [], gap: true });
      expect(contiguousRun([], 3n)).to.deep.equal({ run: [], gap: false });
    });
  });
});
