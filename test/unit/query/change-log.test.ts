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
    expect(entry.unreadable).to.equal(undefined);
  });

  it('makes an entry no client could decode a stand-in at its position, from the fields beside it, and never throws', () => {
    const side = ['e', 'e-1', 's', '2', 'r', '4'];
    const buffers = (...fields: (string | Buffer)[]): Buffer[] =>
      fields.map((f) => (Buffer.isBuffer(f) ? f : Buffer.from(f)));
    const cases: [string, Buffer[], RegExp][] = [
      ['garbage', buffers('u', Buffer.from([0x0a, 0x7f]), ...side), /run past/],
      ['no update at all', buffers(...side), /no update/],
      ['nothing', [], /no update/],
    ];
    for (const [what, fields, reason] of cases) {
      const entry = decodeChangeLogEntry('7-0', fields);
      expect(entry.unreadable, what).to.match(reason);
      expect(entry.position, what).to.equal(7n);
      expect(entry.change.update.unreadable, what).to.equal(entry.unreadable);
      // What streams route and filter by, and the position a progress marker carries.
      expect(entry.change.update.message, what).to.deep.include({ position: '7' });
      if (fields.length > 0) {
        expect(entry.change, what).to.deep.include({ position: 7n, evalId: 'e-1', status: 2, revision: 4n });
        expect(entry.change.update.message.evaluation, what).to.deep.include({ evalId: 'e-1', status: 2 });
      } else {
        expect(entry.change, what).to.deep.include({ position: 7n, evalId: '', status: 0, revision: 0n });
      }
    }
  });

  it('reads routing fields that are not numbers from the update instead, and takes the position from the id', () => {
    const update = EvaluationUpdate.fromPartial({
      position: '99',
      revision: '3',
      evaluation: { evalId: 'e-2', status: EvaluationStatus.EVALUATION_STATUS_FAILED },
    });
    const bytes = Buffer.from(EvaluationUpdate.encode(update).finish());
    const entry = decodeChangeLogEntry(
      '8-0',
      ['u', bytes, 'e', 'e-2', 's', 'x', 'r', '-1'].map((f) => (Buffer.isBuffer(f) ? f : Buffer.from(f))),
    );
    expect(entry.unreadable).to.equal(undefined);
    expect(entry.change).to.deep.include({
      position: 8n,
      revision: 3n,
      evalId: 'e-2',
      status: EvaluationStatus.EVALUATION_STATUS_FAILED,
    });
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
