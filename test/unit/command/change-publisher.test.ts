import { setImmediate as nextTurn } from 'node:timers/promises';
import { expect } from 'chai';
import { createRedisChangePublisher } from '../../../services/command/redis/change-publisher';
import { announcedPosition, changeChannel } from '../../../shared/changes';
import type { RecordedEvent } from '../../../shared/domain';
import { partitionOf } from '../../../shared/partitions';
import type { RedisClient } from '../../../shared/redis';

/** A Redis client of pipelines only, each answered when the test says (a cluster retrying a MOVED one, say). */
function slowPipelines(): {
  client: RedisClient;
  sent: { channel: string; positions: string[]; answer(): void }[];
} {
  const sent: { channel: string; positions: string[]; answer(): void }[] = [];
  const client = {
    pipeline() {
      const commands: [string, string][] = [];
      const pipeline = {
        spublish(channel: string, message: string) {
          commands.push([channel, message]);
          return pipeline;
        },
        exec() {
          return new Promise((resolve) => {
            sent.push({
              channel: commands[0]?.[0] ?? '',
              positions: commands.map(([, message]) => String(announcedPosition(message))),
              answer: () => resolve(commands.map(() => [null, 1])),
            });
          });
        },
      };
      return pipeline;
    },
  } as unknown as RedisClient;
  return { client, sent };
}

const event = (position: number, evalId: string): RecordedEvent => ({
  position: String(position),
  evalId,
  revision: String(position),
  recordedAt: '2026-01-01T00:00:00.000Z',
  event: { type: 'EvaluationCancelled', data: { reason: '', cancelledAt: '2026-01-01T00:00:00.000Z' } },
});

describe('change publisher', () => {
  it('sends one pipeline per channel and turn, and the next only once the last was answered, so a channel keeps its order', async () => {
    const { client, sent } = slowPipelines();
    const publisher = createRedisChangePublisher(client, 'p', 1);
    const first = [publisher.publish(event(1, 'a')), publisher.publish(event(2, 'a'))];
    await nextTurn();
    expect(sent.map((s) => s.positions)).to.deep.equal([['1', '2']]);
    expect(sent[0]?.channel).to.equal(changeChannel('p', 0));
    // Asked for while the first is in flight: held, then sent together.
    const later = [publisher.publish(event(3, 'a')), publisher.publish(event(4, 'a'))];
    await nextTurn();
    await nextTurn();
    expect(sent, 'nothing more in flight on the channel').to.have.length(1);
    sent[0]?.answer();
    await Promise.all(first);
    await nextTurn();
    expect(sent.map((s) => s.positions)).to.deep.equal([
      ['1', '2'],
      ['3', '4'],
    ]);
    sent[1]?.answer();
    await Promise.all(later);
  });

  it('does not hold one channel behind another', async () => {
    const { client, sent } = slowPipelines();
    const publisher = createRedisChangePublisher(client, 'p', 64);
    expect(partitionOf('a', 64), 'two evaluations of different partitions').to.not.equal(partitionOf('b', 64));
    void publisher.publish(event(1, 'a'));
    await nextTurn();
    void publisher.publish(event(2, 'b'));
    await nextTurn();
    expect(sent.map((s) => s.positions)).to.deep.equal([['1'], ['2']]);
    expect(sent[0]?.channel).to.not.equal(sent[1]?.channel);
  });
});
