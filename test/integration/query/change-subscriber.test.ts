import { expect } from 'chai';
import { changeChannel, changeChannels, encodeChange } from '../../../shared/changes';
import type { LogStream, RecordedEvent } from '../../../shared/domain';
import { silentLogger } from '../../../shared/logging';
import { createRedisClient, redisTargetOf, type RedisClient } from '../../../shared/redis';
import { subscribeToChanges } from '../../../services/query/redis/change-subscriber';
import { createTestEnvironment, type TestEnvironment } from '../../support/environment';

const PARTITIONS = 2;

function event(position: number, evalId: string, logged?: LogStream): RecordedEvent {
  return {
    position: String(position),
    evalId,
    revision: '3',
    recordedAt: new Date().toISOString(),
    event:
      logged === undefined
        ? {
            type: 'EvaluationStarted',
            data: { executorId: 'x', containerId: 'c', startedAt: new Date().toISOString() },
          }
        : { type: 'EvaluationLogsAppended', data: { stream: logged, offset: 0, length: 5 } },
  };
}

describe('change subscriber: positions for the projector, log appends for their followers', function () {
  this.timeout(30_000);
  let env: TestEnvironment;
  let subscriber: RedisClient;
  let publisher: RedisClient;

  before(async () => {
    env = await createTestEnvironment();
    subscriber = createRedisClient(redisTargetOf(env.config), { maxRetriesPerRequest: 1 });
    publisher = createRedisClient(redisTargetOf(env.config), { maxRetriesPerRequest: 1 });
  });
  after(async () => {
    subscriber?.disconnect();
    publisher?.disconnect();
    await env?.close();
  });

  it('hands every announced position on, and the log of each announced append, from real pub/sub', async () => {
    const prefix = env.config.redisKeyPrefix;
    const positions: bigint[] = [];
    const logs: string[] = [];
    let last: () => void = () => undefined;
    const lastHeard = new Promise<void>((resolve) => (last = resolve));
    const subscription = subscribeToChanges(
      subscriber,
      changeChannels(prefix, PARTITIONS),
      {
        onChange: (position) => {
          positions.push(position);
          if (positions.length === 4) last();
        },
        onLogsAppended: (evalId, stream) => logs.push(`${evalId} ${stream}`),
        onReconnect: () => undefined,
      },
      silentLogger,
    );
    try {
      await subscription.ready;
      await publisher.spublish(changeChannel(prefix, 0), encodeChange(event(1, 'e-1')));
      await publisher.spublish(changeChannel(prefix, 1), encodeChange(event(2, 'e-1', 'stdout')));
      await publisher.spublish(changeChannel(prefix, 0), 'garbage');
      await publisher.spublish(
        changeChannel(prefix, 1),
        encodeChange(event(3, 'e-2', 'stderr'), '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'),
      );
      await publisher.spublish(changeChannel(prefix, 0), encodeChange(event(4, 'e-3')));
      // On a cluster the partitions' channels live on different shards: no order across them.
      await lastHeard;
      expect([...positions].sort((a, b) => Number(a - b))).to.deep.equal([1n, 2n, 3n, 4n]);
      expect([...logs].sort()).to.deep.equal(['e-1 stdout', 'e-2 stderr']);
    } finally {
      await subscription.close();
    }
  });
});
