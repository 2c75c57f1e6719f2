import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createRedisClient, redisTargetOf } from '../../../shared/redis';
import {
  EvaluationStatus,
  EvaluationUpdate,
  Evaluation,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { WatchEvaluationsResponse } from '../../../shared/generated/crucible/storage/v1/query_service';
import { silentLogger } from '../../../shared/logging';
import { createChangeHub } from '../../../services/query/live/change-hub';
import { createShutdown } from '../../../services/query/live/shutdown';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';
import { createChangeLogTail } from '../../../services/query/redis/change-log-tail';
import { createMetadataSource } from '../../../services/query/redis/metadata-source';
import { createUndecodableEntries } from '../../../services/query/redis/undecodable-entries';
import { readStream, type StreamReader } from '../../support/clients';
import { deleteKeys } from '../../support/redis-keys';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

const never = { signal: new AbortController().signal, shutdown: createShutdown().shutdown, deadline: undefined };

function update(position: number): Buffer {
  return Buffer.from(
    EvaluationUpdate.encode({
      evaluation: Evaluation.fromPartial({
        evalId: `h-${position}`,
        status: EvaluationStatus.EVALUATION_STATUS_QUEUED,
      }),
      eventType: 1,
      revision: '1',
      position: String(position),
    }).finish(),
  );
}

/** The positions of the updates a firehose sends until it ends, and how it ended. */
async function drain(reader: StreamReader<WatchEvaluationsResponse>, until: bigint): Promise<bigint[]> {
  const positions: bigint[] = [];
  for (;;) {
    const message = await reader.next();
    const position = message.update?.position;
    if (position === undefined) continue;
    positions.push(BigInt(position));
    if (BigInt(position) >= until) return positions;
  }
}

describe('holes in the change log (entries deleted): resumes say OUT_OF_RANGE, the live tail never waits for good', function () {
  this.timeout(60_000);
  let h: QueryHarness;

  before(async () => {
    h = await createQueryHarness({ READ_MODEL_PARTITIONS: '2', CATCH_UP_INTERVAL_MS: '60000' });
  });
  after(async () => {
    await h.close();
  });

  it('the tail skips a deleted position, even beside an idle partition, and waits for one not yet written', async () => {
    const prefix = `${h.config.redisKeyPrefix}holes`;
    const layout: KeyLayout = createKeyLayout(prefix, 2);
    const blocking = createRedisClient(redisTargetOf(h.config), { maxRetriesPerRequest: null });
    const hub = createChangeHub();
    const published: bigint[] = [];
    hub.onAny((change) => published.push(change.position));
    const tail = createChangeLogTail({
      blocking,
      commands: h.redis,
      layout,
      hub,
      logger: silentLogger,
      undecodable: createUndecodableEntries(silentLogger),
      metadata: createMetadataSource({
        redis: h.redis,
        layout: layout,
        fromLog: () => Promise.resolve(new Map()),
        maxBytes: 1 << 20,
      }),
      blockMs: 5_000,
    });
    try {
      // Partition 0 holds 1, 2, 4, 5: position 3 was written (every checkpoint is past it) and
      // then deleted. Partition 1 is idle: its stream never moves past the hole.
      for (const p of [1, 2, 4, 5])
        await h.redis.xadd(layout.changeLog(0), `${p}-0`, 'u', update(p), 'e', `h-${p}`, 's', '1', 'r', '1');
      await h.redis.set(layout.checkpoint(0), '5');
      await h.redis.set(layout.checkpoint(1), '5');
      tail.start(() => Promise.resolve(0n));
      await hub.waitForPosition(5n, never);
      expect(published).to.deep.equal([1n, 2n, 4n, 5n]);
      // A position not yet written by its partition is waited for, not skipped.
      await h.redis.xadd(layout.changeLog(0), '7-0', 'u', update(7), 'e', 'h-7', 's', '1', 'r', '1');
      await h.redis.set(layout.checkpoint(0), '7');
      await h.redis.set(layout.checkpoint(1), '6'); // partition 1's share of 6..7 is still being written
      await h.redis.xadd(layout.changeLog(1), '6-0', 'u', update(6), 'e', 'h-6', 's', '1', 'r', '1');
      await h.redis.set(layout.checkpoint(1), '7');
      await hub.waitForPosition(7n, never);
      expect(published).to.deep.equal([1n, 2n, 4n, 5n, 6n, 7n]);
    } finally {
      await tail.stop();
      blocking.disconnect();
      await deleteKeys(h.redis, `${prefix}*`);
    }
  });

  describe('through a replica', () => {
    let replica: Replica;
    let layout: KeyLayout;
    let head: bigint;
    let hole: bigint;

    before(async () => {
      layout = createKeyLayout(h.config.redisKeyPrefix, 2);
      let last = 0n;
      for (let i = 0; i < 20; i += 1) last = BigInt((await h.writer.submit(`holes-${i}`)).position);
      head = last;
      replica = await h.startReplica();
      await replica.service.projector.whenCaughtUp();
      await replica.service.hub.waitForPosition(head, never);
      // Delete one entry in the middle of the log, from whichever partition holds it.
      hole = head - 8n;
      let deleted = 0;
      for (const p of [0, 1]) deleted += await h.redis.xdel(layout.changeLog(p), `${hole}-0`);
      expect(deleted).to.equal(1);
    });

    it('a firehose resuming before the hole gets what precedes it, then OUT_OF_RANGE naming the hole', async () => {
      const reader = readStream(replica.client.watchEvaluations({ statuses: [], evalIds: [], afterPosition: '0' }));
      const before = await drain(reader, hole - 1n);
      expect(before).to.deep.equal(Array.from({ length: Number(hole - 1n) }, (_, i) => BigInt(i + 1)));
      const err = await reader.finished;
      expect(err?.code).to.equal(grpcStatus.OUT_OF_RANGE);
      expect(err?.details).to.contain(`oldest resumable position is ${hole}`);
    });

    it('resuming from the position it names delivers everything after the hole, and live changes', async () => {
      const reader = readStream(
        replica.client.watchEvaluations({ statuses: [], evalIds: [], afterPosition: hole.toString() }),
      );
      const after = await drain(reader, head);
      expect(after).to.deep.equal(Array.from({ length: Number(head - hole) }, (_, i) => hole + BigInt(i + 1)));
      const live = BigInt((await h.writer.submit('holes-live', { publish: true })).position);
      expect(await drain(reader, live)).to.deep.equal([live]);
      reader.cancel();
    });
  });
});
