import { expect } from 'chai';
import {
  announcedLogsAppended,
  announcedPosition,
  announcedTraceparent,
  changeChannel,
  changeChannels,
  decodeChange,
  encodeChange,
} from '../../../shared/changes';
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
  it("names each partition's channel after the key prefix, with the partition's hash tag", () => {
    expect(changeChannel('crucible', 0)).to.equal('crucible:{crucible:0}:changed');
    expect(changeChannel('crucible', 7)).to.equal('crucible:{crucible:7}:changed');
    expect(changeChannel('t1', 0)).to.not.equal(changeChannel('t2', 0));
    expect(changeChannels('crucible', 3)).to.deep.equal([0, 1, 2].map((p) => changeChannel('crucible', p)));
    // The ACL glob of every partition's channel.
    expect(changeChannel('crucible', '*')).to.equal('crucible:{crucible:*}:changed');
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

  it("carries the writing call's traceparent last, read from the end; none when untraced or malformed", () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const traced = encodeChange(EVENT, traceparent);
    expect(announcedTraceparent(traced)).to.equal(traceparent);
    expect(announcedPosition(traced)).to.equal(BigInt(EVENT.position));
    expect(decodeChange(traced)).to.deep.include({ position: EVENT.position, evalId: EVENT.evalId });
    expect(announcedTraceparent(encodeChange(EVENT))).to.equal(undefined);
    expect(announcedTraceparent(traced.replace(traceparent, '00-zz-b7ad6b7169203331-01'))).to.equal(undefined);
  });

  it('reads the announced position from the start of a message, whatever the event key order', () => {
    const reordered = { event: EVENT.event, recordedAt: EVENT.recordedAt, revision: '2', evalId: 'e1', position: '77' };
    expect(announcedPosition(encodeChange(EVENT))).to.equal(9007199254740993n);
    expect(announcedPosition(encodeChange(reordered))).to.equal(77n);
  });

  it('finds no position in garbage, forged shapes, or non-numeric and zero positions', () => {
    for (const message of [
      'not json',
      '',
      '{}',
      '{"position":5}',
      '{"position":"5x"',
      '{"position":"abc","evalId":"e"}',
      '{"position":"0"}',
      '{"position":"-3"}',
      '{"position":"99999999999999999999"}',
      ' {"position":"5"}',
      JSON.stringify({ evalId: 'e1', position: '5' }),
    ]) {
      expect(announcedPosition(message), message).to.equal(undefined);
    }
  });

  it('names the log of a log append, from the message alone; nothing for other events or forgeries', () => {
    const appended: RecordedEvent = {
      ...EVENT,
      evalId: 'run.7-"quoted"',
      event: { type: 'EvaluationLogsAppended', data: { stream: 'stderr', offset: 0, length: 10 } },
    };
    const log = { evalId: 'run.7-"quoted"', stream: 'stderr' };
    expect(announcedLogsAppended(encodeChange(appended))).to.deep.equal(log);
    const traced = encodeChange(appended, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
    expect(announcedLogsAppended(traced)).to.deep.equal(log);
    expect(announcedLogsAppended(encodeChange(EVENT))).to.equal(undefined);
    const start = '{"position":"1","evalId":"x","revision":"2","recordedAt":"2025-01-01T00:00:00.000Z","event":';
    expect(announcedLogsAppended(`${start}{"type":"EvaluationLogsAppended","data":{"stream":"stdout",`)).to.deep.equal({
      evalId: 'x',
      stream: 'stdout',
    });
    for (const forged of [
      'not json',
      `${start}{"type":"EvaluationLogsAppended","data":{"stream":"stdin",`,
      `${start}{"type":"EvaluationStarted","data":{"stream":"stdout",`,
      // The type further in (in metadata, say) is not the event's.
      `{"position":"1","evalId":"x","revision":"2","recordedAt":"t","event":{"type":"EvaluationQueued","data":{"m":"\\"event\\":{\\"type\\":\\"EvaluationLogsAppended\\""}}}`,
      start.replace('"position":"1"', '"position":"0"') + '{"type":"EvaluationLogsAppended","data":{"stream":"stdout",',
      start.replace('"evalId":"x"', '"evalId":"\\u12"') + '{"type":"EvaluationLogsAppended","data":{"stream":"stdout",',
      start.replace('"evalId":"x"', '"evalId":""') + '{"type":"EvaluationLogsAppended","data":{"stream":"stdout",',
    ]) {
      expect(announcedLogsAppended(forged), forged).to.equal(undefined);
    }
  });
});
