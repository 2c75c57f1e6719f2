import { expect } from 'chai';
import { changeChannel, changeChannels, decodeChange } from '../../../shared/changes';
import { partitionOf } from '../../../shared/partitions';
import { createRedisClient, redisTargetOf, type RedisClient } from '../../../shared/redis';
import type { RecordedEvent } from '../../../shared/domain';
import { createRedisChangePublisher } from '../../../services/command/redis/change-publisher';
import { commandsOf, createHarness, eventCount, eventsOf, type Harness } from './harness';

/** Collects the changes published on a channel and lets a test await the n-th one. */
interface ChangeListener {
  readonly received: RecordedEvent[];
  /** Messages on the channel that are not recorded events. */
  readonly undecodable: string[];
  next(count: number): Promise<RecordedEvent[]>;
}

function listen(subscriber: RedisClient, channel: string): ChangeListener {
  const received: RecordedEvent[] = [];
  const undecodable: string[] = [];
  const waiters: { count: number; resolve: (events: RecordedEvent[]) => void }[] = [];
  subscriber.on('smessage', (from: string, message: string) => {
    if (from !== channel) return;
    const change = decodeChange(message);
    if (change === undefined) {
      undecodable.push(message);
      return;
    }
    received.push(change);
    for (const waiter of waiters.filter((w) => received.length >= w.count)) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve(received.slice(0, waiter.count));
    }
  });
  return {
    received,
    undecodable,
    next: (count) =>
      received.length >= count
        ? Promise.resolve(received.slice(0, count))
        : new Promise((resolve) => waiters.push({ count, resolve })),
  };
}

describe('command executor: publishing changes on Redis', function () {
  let h: Harness;
  // A subscribed connection can run no other command, so the test listens on its own.
  let subscriber: RedisClient;
  let changes: ChangeListener;

  before(async () => {
    h = await createHarness();
    subscriber = createRedisClient(redisTargetOf(h.env.config), { lazyConnect: true });
    await subscriber.connect();
    // One partition (the default): one channel.
    const channel = changeChannel(h.env.config.redisKeyPrefix, 0);
    const prefix = h.env.config.redisKeyPrefix;
    expect(channel).to.equal(`${prefix}:{${prefix}:0}:changed`);
    changes = listen(subscriber, channel);
    await subscriber.ssubscribe(channel);
  });

  afterEach(() => {
    expect(changes.undecodable, 'every message on the channel is a recorded event').to.deep.equal([]);
  });

  after(async () => {
    await subscriber.quit();
    await h.close();
  });

  it("publishes each committed event, in order, on its partition's sharded channel `${prefix}:{${prefix}:n}:changed`", async () => {
    const submitted = await h.commands.submit({ evalId: 'pub-1', metadata: { k: 'v' } });
    const started = await h.commands.start({ evalId: 'pub-1', executorId: 'exec-p' });
    const completed = await h.commands.complete({ evalId: 'pub-1', output: Buffer.from('published'), exitCode: 0 });

    const received = await changes.next(3);
    expect(received.map((c) => [c.evalId, c.revision, c.position, c.event.type])).to.deep.equal([
      ['pub-1', '1', submitted.position, 'EvaluationQueued'],
      ['pub-1', '2', started.position, 'EvaluationStarted'],
      ['pub-1', '3', completed.position, 'EvaluationCompleted'],
    ]);
    // The published event is the stored one.
    const stored = await eventsOf(h.sql, 'pub-1');
    received.forEach((change, i) => {
      expect(change.event.data, change.event.type).to.deep.equal(stored[i]?.data);
      expect(change.recordedAt).to.equal(stored[i]?.recorded_at.toISOString());
    });
  });

  it('publishes nothing for a repeated command', async () => {
    const before = changes.received.length;
    await h.commands.submit({ evalId: 'pub-1', metadata: { k: 'v' } });
    // The next real change must be the very next message: the repeat published nothing.
    const next = await h.commands.submit({ evalId: 'pub-2' });
    const received = await changes.next(before + 1);
    expect(received.at(-1)).to.deep.include({ evalId: 'pub-2', position: next.position });
  });

  it('answers the command even when publishing fails: the event is durable in PostgreSQL', async () => {
    // Never connected and no offline queue: every publish is refused at once.
    const offline = createRedisClient(redisTargetOf(h.env.config), { lazyConnect: true, enableOfflineQueue: false });
    try {
      const failing = createRedisChangePublisher(offline, h.env.config.redisKeyPrefix, 1);
      const published = failing.publish({
        position: '1',
        evalId: 'x',
        revision: '1',
        recordedAt: new Date().toISOString(),
        event: { type: 'EvaluationCancelled', data: { reason: '', cancelledAt: new Date().toISOString() } },
      });
      await published.then(
        () => expect.fail('publish on an offline connection succeeded'),
        (err: unknown) => expect(err).to.be.instanceOf(Error),
      );

      const commands = commandsOf(h.executorWith({ publisher: failing }), h.env.config.limits);
      const count = await eventCount(h.sql);
      const result = await commands.submit({ evalId: 'pub-offline' });
      expect(result).to.deep.include({ evalId: 'pub-offline', revision: '1' });
      expect(await eventCount(h.sql)).to.equal(count + 1);
    } finally {
      offline.disconnect();
    }
  });

  it("announces each evaluation's events on its own partition's channel, each channel in commit order", async () => {
    const partitions = 4;
    const prefix = h.env.config.redisKeyPrefix;
    const channels = changeChannels(prefix, partitions);
    const listener = createRedisClient(redisTargetOf(h.env.config), { lazyConnect: true });
    const publisher = createRedisClient(redisTargetOf(h.env.config), { lazyConnect: true });
    await Promise.all([listener.connect(), publisher.connect()]);
    try {
      const heard = channels.map((channel) => listen(listener, channel));
      for (const channel of channels) await listener.ssubscribe(channel);
      const publishing = createRedisChangePublisher(publisher, prefix, partitions);
      const events: RecordedEvent[] = Array.from({ length: 40 }, (_, i) => ({
        position: String(i + 1),
        evalId: `part-${i % 13}`,
        revision: String(Math.floor(i / 13) + 1),
        recordedAt: new Date().toISOString(),
        event: { type: 'EvaluationCancelled', data: { reason: '', cancelledAt: new Date().toISOString() } },
      }));
      // Asked for in one turn, as a group commit's events are: one flush, one pipeline per channel.
      await Promise.all(events.map((event) => publishing.publish(event)));
      const expected = channels.map((_, p) => events.filter((e) => partitionOf(e.evalId, partitions) === p));
      expect(expected.filter((list) => list.length > 0).length, 'the ids spread over several partitions').to.be.above(
        1,
      );
      const received = await Promise.all(heard.map((l, p) => l.next(expected[p]?.length ?? 0)));
      received.forEach((list, p) => {
        expect(
          list.map((e) => e.position),
          `partition ${p}`,
        ).to.deep.equal(expected[p]?.map((e) => e.position));
      });
    } finally {
      listener.disconnect();
      publisher.disconnect();
    }
  });
});
