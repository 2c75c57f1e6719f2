import { expect } from 'chai';
import { changeChannel, decodeChange, encodeChange } from '../../../shared/changes';
import type { RecordedEvent } from '../../../shared/domain';

const EVENT: RecordedEvent = {
  position: '9007199254740993',
  evalId: 'e1',
  revision: '2',
  recordedAt: '2025-01-01T00:00:00.000Z',
  event: {
    type: 'EvaluationStarted',
    data: { executorId: 'x', containerId: 'c', startedAt: '2025-01-01T00:00:00.000Z' },
  },
};

describe('change feed', () => {
  it('names the channel after the key prefix', () => {
    expect(changeChannel('crucible')).to.equal('crucible:changes');
    expect(changeChannel('t1')).to.not.equal(changeChannel('t2'));
  });

  it('round-trips a recorded event, keeping 64-bit positions exact', () => {
    expect(decodeChange(encodeChange(EVENT))).to.deep.equal(EVENT);
  });

  it('rejects messages that are not recorded events', () => {
    for (const message of [
      'not json',
      '{}',
      'null',
      '42',
      JSON.stringify({ ...EVENT, position: 5 }),
      JSON.stringify({ ...EVENT, event: undefined }),
      JSON.stringify({ ...EVENT, evalId: undefined }),
    ]) {
      expect(decodeChange(message), message).to.equal(undefined);
    }
  });
});
