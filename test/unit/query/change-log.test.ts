import { expect } from 'chai';
import { EvaluationStatus, EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { changeOf } from '../../../services/query/live/change';
import { encodeOnce } from '../../../services/query/wire/encoded';
import {
  contiguousRun,
  decodeChangeLogEntry,
  positionOfEntryId,
  type ChangeLogEntry,
} from '../../../services/query/read-models/change-log';

const entry = (position: number): ChangeLogEntry => ({
  position: BigInt(position),
  change: changeOf(encodeOnce(EvaluationUpdate, EvaluationUpdate.fromPartial({ position: String(position) }))),
});

describe('change log', () => {
  it('reads positions from entry ids', () => {
    expect(positionOfEntryId('42-0')).to.equal(42n);
    expect(positionOfEntryId('9007199254740993-0')).to.equal(9007199254740993n);
  });

  it('reads an entry from its field list without decoding the update, and keeps its bytes', () => {
    const update = EvaluationUpdate.fromPartial({
      position: '5',
      revision: '2',
      evaluation: { evalId: 'e-1', status: EvaluationStatus.EVALUATION_STATUS_RUNNING },
    });
    const bytes = Buffer.from(EvaluationUpdate.encode(update).finish());
    const fields = (e: string, s: string, r: string): Buffer[] =>
      ['u', bytes, 'e', e, 's', s, 'r', r].map((f) => (Buffer.isBuffer(f) ? f : Buffer.from(f)));
    const entry = decodeChangeLogEntry(Buffer.from('5-0'), fields('e-1', '2', '2'));
    expect(entry.position).to.equal(5n);
    expect(entry.change).to.deep.include({
      position: 5n,
      revision: 2n,
      evalId: 'e-1',
      status: EvaluationStatus.EVALUATION_STATUS_RUNNING,
    });
    expect(entry.change.update.bytes).to.equal(bytes);
    // The fields beside the bytes are what the live path routes by: nothing decodes the update.
    const routed = decodeChangeLogEntry(Buffer.from('5-0'), fields('other', '4', '7'));
    expect(routed.change).to.deep.include({ evalId: 'other', status: 4, revision: 7n });
    expect(routed.change.update.message).to.deep.include({ position: '5', revision: '2' });
    expect(() => decodeChangeLogEntry('6-0', [])).to.throw(/no update/);
  });

  it('reads an entry written before the fields existed by decoding its update', () => {
    const update = EvaluationUpdate.fromPartial({
      position: '5',
      revision: '3',
      evaluation: { evalId: 'old', status: EvaluationStatus.EVALUATION_STATUS_COMPLETED },
    });
    const entry = decodeChangeLogEntry('5-0', [
      Buffer.from('u'),
      Buffer.from(EvaluationUpdate.encode(update).finish()),
    ]);
    expect(entry.change).to.deep.include({
      position: 5n,
      revision: 3n,
      evalId: 'old',
      status: EvaluationStatus.EVALUATION_STATUS_COMPLETED,
    });
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
