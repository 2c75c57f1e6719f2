import { expect } from 'chai';
import type { RecordedEvent } from '../../../shared/domain';
import { createPostgresEventLog } from '../../../services/query/postgres/event-log';
import { createBoundedRangeReader } from '../../../services/query/redis/bounded-range';
import { createQueryHarness, type QueryHarness } from './harness';

const KiB = 1024;

/**
 * The reads that catch-up, rebuild, the change-log tail and firehose replays are made of stop
 * at a byte budget as well as a count, so that large updates are never held a thousand at a
 * time (test/fault/slow-consumer.test.ts measures what that does to the process).
 */
describe('reads bounded by bytes as well as count', function () {
  this.timeout(60_000);
  let h: QueryHarness;

  before(async () => {
    h = await createQueryHarness({ CATCH_UP_INTERVAL_MS: '60000' });
  });
  after(async () => {
    await h.close();
  });

  it('the event log stops a batch once the budget is reached, and the next batches carry on without a gap', async () => {
    const replica = await h.startReplica();
    try {
      const eventLog = createPostgresEventLog(replica.pool, { maxBatchBytes: 250 * KiB });
      const head = await eventLog.headPosition();
      const written: RecordedEvent[] = [];
      for (let i = 0; i < 10; i += 1) {
        written.push(await h.writer.submit(`bytes-${i}`, { metadata: { blob: 'x'.repeat(100 * KiB) } }));
      }

      // ~100 KiB each: the third starts below 250 KiB, the fourth would start above it.
      const first = await eventLog.readAfter(head, 1000);
      expect(first.events.map((e) => e.evalId)).to.deep.equal(['bytes-0', 'bytes-1', 'bytes-2']);
      expect(first.full).to.equal(true);

      const read: RecordedEvent[] = [...first.events];
      let batch = first;
      while (batch.full) {
        batch = await eventLog.readAfter(BigInt(read[read.length - 1]?.position ?? head), 1000);
        expect(batch.events.length).to.be.at.most(3);
        read.push(...batch.events);
      }
      expect(read.map((e) => e.position)).to.deep.equal(written.map((e) => e.position));
      expect(read[0]?.event).to.deep.equal(written[0]?.event);

      // The count still bounds a batch of small events; one event larger than the budget is
      // read alone rather than never.
      expect((await eventLog.readAfter(head, 2)).events).to.have.length(2);
      const tiny = createPostgresEventLog(replica.pool, { maxBatchBytes: 1 });
      const alone = await tiny.readAfter(head, 1000);
      expect(alone.events.map((e) => e.evalId)).to.deep.equal(['bytes-0']);
      expect(alone.full).to.equal(true);
    } finally {
      await replica.close();
    }
  });

  it('a stream range stops at the budget or the count, says when it did, and reads on from where it stopped', async () => {
    const key = `${h.config.redisKeyPrefix}:test:bounded-range`;
    await h.redis.del(key);
    for (let i = 1; i <= 10; i += 1) await h.redis.xadd(key, `${i}-0`, 'u', 'y'.repeat(100 * KiB));
    const range = createBoundedRangeReader(h.redis);

    const first = await range(key, '(0-0', 1000, 250 * KiB);
    expect(first.entries.map(([id]) => id.toString())).to.deep.equal(['1-0', '2-0', '3-0']);
    expect(first.full).to.equal(true);
    expect(first.entries[0]?.[1].map((b) => b.length)).to.deep.equal([1, 100 * KiB]);

    const byCount = await range(key, '(3-0', 2, 10 * 1024 * KiB);
    expect(byCount.entries.map(([id]) => id.toString())).to.deep.equal(['4-0', '5-0']);
    expect(byCount.full).to.equal(true);

    // Short of the count with nothing left: not full.
    const rest = await range(key, '(5-0', 1000, 10 * 1024 * KiB);
    expect(rest.entries.map(([id]) => id.toString())).to.deep.equal(['6-0', '7-0', '8-0', '9-0', '10-0']);
    expect(rest.full).to.equal(false);
    expect((await range(key, '(10-0', 1000, 1)).entries).to.deep.equal([]);

    await h.redis.del(key);
    // More than two of the script's inner pages (64 entries each).
    for (let i = 1; i <= 130; i += 1) await h.redis.xadd(key, `${i}-0`, 'u', 'z');
    const many = await range(key, '(0-0', 1000, 10 * 1024 * KiB);
    expect(many.entries).to.have.length(130);
    expect(many.full).to.equal(false);
    const exact = await range(key, '(0-0', 128, 10 * 1024 * KiB);
    expect(exact.entries).to.have.length(128);
    expect(exact.full).to.equal(true);
    await h.redis.del(key);
  });
});
