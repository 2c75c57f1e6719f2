import { status as grpcStatus, Metadata, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createRedisClient, redisTargetOf, type RedisClient } from '../../../shared/redis';
import {
  Evaluation,
  EvaluationStatus,
  EvaluationUpdate,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import type {
  WatchEvaluationResponse,
  WatchEvaluationsResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { createLogger, silentLogger, type LogFields } from '../../../shared/logging';
import { createChangeHub } from '../../../services/query/live/change-hub';
import type { Change } from '../../../services/query/live/change';
import { createShutdown } from '../../../services/query/live/shutdown';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';
import { createChangeLogTail } from '../../../services/query/redis/change-log-tail';
import { createMetadataSource } from '../../../services/query/redis/metadata-source';
import { createUndecodableEntries } from '../../../services/query/redis/undecodable-entries';
import { readStream, type StreamReader } from '../../support/clients';
import { deleteKeys } from '../../support/redis-keys';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

type Message = WatchEvaluationResponse | WatchEvaluationsResponse;

const describeMessage = (m: Message): string =>
  m.update !== undefined
    ? `update ${m.update.evaluation?.evalId}@${m.update.revision} (${m.update.position})`
    : m.caughtUp !== undefined
      ? `caught_up ${m.caughtUp.position}`
      : `progress ${m.progress?.position}`;

async function messages(reader: StreamReader<Message>, n: number): Promise<string[]> {
  const got: string[] = [];
  for (let i = 0; i < n; i += 1) got.push(describeMessage(await reader.next()));
  return got;
}

/** Objects nested `depth` levels deep, as an older command side accepted them (up to 33). */
function nestedObjects(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = { leaf: 'x' };
  for (let i = 1; i < depth; i += 1) value = { level: value };
  return value;
}

const never = { signal: new AbortController().signal, shutdown: createShutdown().shutdown, deadline: undefined };

/** The code of a unary call that must fail (fails the test when it succeeds). */
function failure(run: (callback: (err: ServiceError | null) => void) => void): Promise<ServiceError> {
  return new Promise((resolve, reject) => {
    run((err) => {
      if (err !== null) resolve(err);
      else reject(new Error('the call succeeded'));
    });
  });
}

/**
 * An entry in the read models that no client could decode (written by an older version, by
 * hand, or corrupted) is skipped and reported: the entries around it arrive, streams and
 * waits go on, and a read of exactly that entry is refused with UNAVAILABLE, never INTERNAL.
 */
describe('undecodable read-model entries are skipped and reported, never a wedge', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let replica: Replica;
  let layout: KeyLayout;
  const logged: LogFields[] = [];

  before(async () => {
    // No periodic progress messages: every progress message below stands for a skipped entry.
    h = await createQueryHarness({ STREAM_PROGRESS_INTERVAL_MS: '3600000' });
    layout = createKeyLayout(h.config.redisKeyPrefix, h.config.readModelPartitions);
    replica = await h.startReplica({
      logger: createLogger('info', {}, (line) => void logged.push(JSON.parse(line) as LogFields)),
    });
    await replica.service.projector.whenCaughtUp();
  });
  after(async () => {
    await h.close();
  });

  const firehose = (afterPosition?: string): StreamReader<WatchEvaluationsResponse> =>
    readStream(
      replica.client.watchEvaluations({
        statuses: [],
        evalIds: [],
        ...(afterPosition !== undefined ? { afterPosition } : {}),
      }),
    );

  it('an evaluation an older version accepted with metadata 33 levels deep is refused or left out by every read', async () => {
    const live = firehose();
    expect(describeMessage(await live.next())).to.match(/^caught_up /);
    const before = await h.writer.submit('legacy-before', { publish: true });
    const deep = await h.writer.submit('legacy-deep', { metadata: nestedObjects(33), publish: true });
    const after = await h.writer.submit('legacy-after', { publish: true });

    // Live: the tail and the hub carry on past it; the stream marks its position and goes on.
    expect(await messages(live, 3)).to.deep.equal([
      `update legacy-before@1 (${before.position})`,
      `progress ${deep.position}`,
      `update legacy-after@1 (${after.position})`,
    ]);
    live.cancel();
    await replica.service.hub.waitForPosition(BigInt(after.position), never);

    // Replayed: the same.
    const replay = firehose(String(BigInt(before.position) - 1n));
    expect(await messages(replay, 4)).to.deep.equal([
      `update legacy-before@1 (${before.position})`,
      `progress ${deep.position}`,
      `update legacy-after@1 (${after.position})`,
      `caught_up ${after.position}`,
    ]);
    replay.cancel();

    // Its record would not decode inside GetEvaluationResponse: refused, not served.
    const get = await failure((cb) =>
      replica.client.getEvaluation({ evalId: 'legacy-deep' }, new Metadata(), { deadline: Date.now() + 10_000 }, cb),
    );
    expect(get.code, get.message).to.equal(grpcStatus.UNAVAILABLE);
    expect(get.details).to.match(/legacy-deep.*cannot be decoded/);

    const page = await new Promise<string[]>((resolve, reject) =>
      replica.client.listEvaluations(
        { status: EvaluationStatus.EVALUATION_STATUS_QUEUED, pageSize: 100, pageToken: '' },
        (err, res) => (err !== null ? reject(err) : resolve(res.evaluations.map((e) => e.evalId))),
      ),
    );
    expect(page).to.include.members(['legacy-before', 'legacy-after']);
    expect(page).to.not.include('legacy-deep');

    const watched = await readStream(replica.client.watchEvaluation({ evalId: 'legacy-deep' })).finished;
    expect(watched?.code, watched?.message).to.equal(grpcStatus.UNAVAILABLE);

    expect(
      logged.some((l) => l.msg === 'skipped an undecodable read-model entry' && l.position === deep.position),
    ).to.equal(true);
  });

  it('garbage in a history, a record or the change log is skipped, and the entries around it arrive', async () => {
    // A history whose first update is garbage: the second still arrives, and the stream goes on.
    await h.writer.submit('hist-1');
    const started = await h.writer.start('hist-1', { publish: true });
    // A record that is garbage: refused alone, left out of pages.
    await h.writer.submit('rec-1');
    const ok = await h.writer.submit('rec-2', { publish: true });
    // Five changes: the middle three are garbage in three ways.
    const c1 = await h.writer.submit('log-1');
    const c2 = await h.writer.submit('log-2');
    const c3 = await h.writer.submit('log-3');
    const c4 = await h.writer.submit('log-4');
    const c5 = await h.writer.submit('log-5', { publish: true });
    await replica.service.hub.waitForPosition(BigInt(c5.position), never);

    await h.redis.lset(layout.history(layout.partitionOf('hist-1'), 'hist-1'), 0, 'junk');
    await h.redis.set(layout.record(layout.partitionOf('rec-1'), 'rec-1'), Buffer.from([0x0a, 0x7f]));
    await rewriteChangeLog(h.redis, layout, (position, fields) => {
      if (position === BigInt(c2.position)) return replaceField(fields, 'u', Buffer.from('junk')); // side fields kept
      if (position === BigInt(c3.position)) return ['u', Buffer.from([0xff, 0xff])]; // nothing else
      if (position === BigInt(c4.position)) return withoutField(fields, 'u'); // side fields, no update
      return fields;
    });

    const history = readStream(replica.client.watchEvaluation({ evalId: 'hist-1', afterRevision: '0' }));
    expect(await messages(history, 2)).to.deep.equal([
      `update hist-1@2 (${started.position})`,
      `caught_up ${replica.service.hub.appliedPosition}`,
    ]);
    history.cancel();

    const get = await failure((cb) =>
      replica.client.getEvaluation({ evalId: 'rec-1' }, new Metadata(), { deadline: Date.now() + 10_000 }, cb),
    );
    expect(get.code, get.message).to.equal(grpcStatus.UNAVAILABLE);
    const page = await new Promise<string[]>((resolve, reject) =>
      replica.client.listEvaluations(
        { status: EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED, pageSize: 100, pageToken: '' },
        (err, res) => (err !== null ? reject(err) : resolve(res.evaluations.map((e) => e.evalId))),
      ),
    );
    expect(page).to.include('rec-2');
    expect(page).to.not.include('rec-1');
    expect(ok.position).to.be.a('string');

    const replay = firehose(String(BigInt(c1.position) - 1n));
    expect(await messages(replay, 6)).to.deep.equal([
      `update log-1@1 (${c1.position})`,
      `progress ${c2.position}`,
      `progress ${c3.position}`,
      `progress ${c4.position}`,
      `update log-5@1 (${c5.position})`,
      `caught_up ${c5.position}`,
    ]);
    replay.cancel();
  });

  it("the replica's live tail publishes past entries it cannot decode", async () => {
    const prefix = `${h.config.redisKeyPrefix}tail`;
    const tailLayout = createKeyLayout(prefix, 1);
    const key = tailLayout.changeLog(0);
    const blocking = createRedisClient(redisTargetOf(h.config), { maxRetriesPerRequest: null });
    const lines: LogFields[] = [];
    const hub = createChangeHub();
    const published: Change[] = [];
    hub.onAny((change) => published.push(change));
    const tail = createChangeLogTail({
      blocking,
      commands: h.redis,
      layout: tailLayout,
      hub,
      logger: silentLogger,
      undecodable: createUndecodableEntries(
        createLogger('info', {}, (line) => void lines.push(JSON.parse(line) as LogFields)),
      ),
      metadata: createMetadataSource({
        redis: h.redis,
        layout: tailLayout,
        fromLog: () => Promise.resolve(new Map()),
        maxBytes: 1 << 20,
      }),
      blockMs: 200,
    });
    try {
      const update = (position: number): Buffer =>
        Buffer.from(
          EvaluationUpdate.encode({
            evaluation: Evaluation.fromPartial({
              evalId: `t-${position}`,
              status: EvaluationStatus.EVALUATION_STATUS_QUEUED,
            }),
            eventType: 1,
            revision: '1',
            position: String(position),
          }).finish(),
        );
      await h.redis.xadd(key, '1-0', 'u', update(1), 'e', 't-1', 's', '1', 'r', '1');
      await h.redis.xadd(key, '2-0', 'e', 't-2', 's', '1', 'r', '1'); // no update at all
      await h.redis.xadd(key, '3-0', 'u', 'junk', 'e', 't-3', 's', '1', 'r', '1');
      await h.redis.xadd(key, '4-0', 'u', update(4)); // an older version's entry: no side fields
      tail.start(() => Promise.resolve(0n));
      await hub.waitForPosition(4n, never);
      expect(published.map((c) => [c.position, c.evalId, c.update.unreadable !== undefined])).to.deep.equal([
        [1n, 't-1', false],
        [2n, 't-2', true],
        [3n, 't-3', true],
        [4n, 't-4', false],
      ]);
      const reported = lines.filter((l) => l.msg === 'skipped an undecodable read-model entry');
      expect(reported[0]).to.include({ key, position: '2' });
    } finally {
      await tail.stop();
      blocking.disconnect();
      await deleteKeys(h.redis, `${prefix}*`);
    }
  });
});

/** Rewrites every change-log entry (fields as name/value pairs) in one MULTI, as if written so. */
async function rewriteChangeLog(
  redis: RedisClient,
  layout: KeyLayout,
  rewrite: (position: bigint, fields: (string | Buffer)[]) => (string | Buffer)[],
): Promise<void> {
  const key = layout.changeLog(0);
  const entries = await redis.xrangeBuffer(key, '-', '+');
  const tx = redis.multi().del(key);
  for (const [id, raw] of entries) {
    const fields = raw.map((f, i) => (i % 2 === 0 ? f.toString() : f));
    const position = BigInt(id.toString().split('-')[0] ?? '0');
    tx.xadd(key, id.toString(), ...rewrite(position, fields));
  }
  await tx.exec();
}

function replaceField(fields: (string | Buffer)[], name: string, value: Buffer): (string | Buffer)[] {
  return fields.map((f, i) => (i % 2 === 1 && fields[i - 1] === name ? value : f));
}

function withoutField(fields: (string | Buffer)[], name: string): (string | Buffer)[] {
  return fields.filter((_, i) => fields[i - (i % 2)] !== name);
}
