import { expect } from 'chai';
import { createRedisClient, redisTargetOf, scanKeys, type RedisClient } from '../../../shared/redis';
import { Client } from 'pg';
import { changeChannel, encodeChange } from '../../../shared/changes';
import type { RecordedEvent } from '../../../shared/domain';
import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { silentLogger } from '../../../shared/logging';
import { createPool } from '../../../shared/postgres';
import { createPostgresEventLog } from '../../../services/query/postgres/event-log';
import { createProjectionApplier, type ProjectionApplier } from '../../../services/query/projection/applier';
import type { EventLog } from '../../../services/query/projection/event-log';
import { rebuildReadModels } from '../../../services/query/projection/rebuild';
import { createCheckpoints } from '../../../services/query/redis/checkpoints';
import { createKeyLayout, partitionNumbers, type KeyLayout } from '../../../services/query/read-models/keys';
import { createRedisProjectionStore } from '../../../services/query/redis/projection-store';
import { status as grpcStatus } from '@grpc/grpc-js';
import { QUERY_SERVICE_NAME } from '../../../services/query/server';
import { call, expectError } from '../../support/clients';
import { waitForServing } from '../../support/processes';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';
import { createShutdown } from '../../../services/query/live/shutdown';
import { until } from '../../support/until';

/** Resolves once the replica's read models have applied `position` (an awaited event). */
async function reached(replica: Replica, position: string | bigint): Promise<void> {
  const never = new AbortController();
  await replica.service.hub.waitForPosition(BigInt(position), {
    signal: never.signal,
    shutdown: createShutdown().shutdown,
    deadline: new Date(Date.now() + 15_000),
  });
}

async function lifecycles(h: QueryHarness, count: number, prefix: string, publish: boolean): Promise<RecordedEvent> {
  let last: RecordedEvent | undefined;
  for (let i = 0; i < count; i += 1) {
    const id = `${prefix}-${i}`;
    last = await h.writer.submit(id, { publish });
    if (i % 2 === 0) last = await h.writer.start(id, { publish });
    if (i % 3 === 0) last = await h.writer.complete(id, { publish });
  }
  if (last === undefined) throw new Error('no events written');
  return last;
}

const consistency = (h: QueryHarness, layout: KeyLayout): Promise<string[]> => h.differences(layout);

/** An applier of its own (outside any replica) on `redis`, reading `eventLog`. */
function applierOn(h: QueryHarness, layout: KeyLayout, redis: RedisClient, eventLog: EventLog): ProjectionApplier {
  return createProjectionApplier({
    store: createRedisProjectionStore(redis, layout, h.config.streams.changeLogRetention),
    eventLog,
    layout,
    logger: silentLogger,
  });
}

describe('query projection (PostgreSQL event log → Redis read models)', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let layout: KeyLayout;

  before(async () => {
    h = await createQueryHarness({ CATCH_UP_INTERVAL_MS: '60000' });
    layout = createKeyLayout(h.config.redisKeyPrefix, h.config.readModelPartitions);
  });
  after(async () => {
    await h.close();
  });

  it('catches up from PostgreSQL at start and serves only once caught up', async () => {
    const last = await lifecycles(h, 30, 'start', false);
    // Hold the log still: the replica's catch-up read waits for this lock.
    await h.sql.query('BEGIN');
    await h.sql.query('LOCK TABLE evaluation_events IN ACCESS EXCLUSIVE MODE');
    const replica = await h.startReplica();
    try {
      const early = await call(replica.client, replica.client.getProjectionStatus, {}, 5000);
      expect(early.caughtUp).to.equal(false);
      const refused = await expectError(call(replica.client, replica.client.getEvaluation, { evalId: 'start-0' }, 300));
      expect(refused.code).to.equal(grpcStatus.UNAVAILABLE);
      expect(refused.details).to.contain('still catching up');
    } finally {
      await h.sql.query('COMMIT');
    }
    await waitForServing(replica.address, QUERY_SERVICE_NAME);
    await replica.service.projector.whenCaughtUp();
    const status = replica.service.projector.status();
    expect(status.caughtUp).to.equal(true);
    expect(status.checkpoint >= BigInt(last.position)).to.equal(true);
    expect(status.catchUpEvents).to.equal(BigInt(last.position));
    const { evaluation } = await call(replica.client, replica.client.getEvaluation, { evalId: 'start-0' });
    expect(evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_COMPLETED);
    expect(evaluation?.revision).to.equal('3');
    const projection = await call(replica.client, replica.client.getProjectionStatus, {});
    expect(projection).to.include({
      checkpoint: last.position,
      headPosition: last.position,
      lagPositions: '0',
      caughtUp: true,
    });
    expect(projection.partitionCheckpoints).to.deep.equal([last.position]);
    expect(await consistency(h, layout)).to.deep.equal([]);
    await replica.close();
  });

  it('takes pub/sub as hints: what a message announces is read from PostgreSQL, and forged messages change nothing', async () => {
    const replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
    // The quiet timer is a minute: only a message can wake these steps.
    const first = await h.writer.submit('hint-1', { publish: true });
    await reached(replica, first.position);
    const head = BigInt(first.position);

    // Garbage, a non-numeric position, and well-formed events PostgreSQL does not have, one of
    // them at the very position the next real event takes.
    const channel = changeChannel(h.config.redisKeyPrefix, 0);
    const forged = (evalId: string, position: bigint): RecordedEvent => ({
      ...first,
      evalId,
      position: position.toString(),
      revision: evalId === 'hint-1' ? '2' : '1',
    });
    for (const message of [
      'not json',
      '{"position":"abc"}',
      encodeChange(forged('forged-1', head + 1n)),
      encodeChange({
        ...forged('hint-1', head + 1n),
        event: { type: 'EvaluationCancelled', data: { reason: 'forged', cancelledAt: first.recordedAt } },
      }),
      encodeChange(forged('forged-2', head + 1_000n)),
    ])
      await h.redis.spublish(channel, message);
    // Messages on one channel arrive in order: once the real next event is applied, every
    // forged one before it has been handled.
    await h.writer.start('hint-1', { publish: false }); // a lost message
    const real = await h.writer.submit('hint-2', { publish: true });
    await reached(replica, real.position);

    for (const evalId of ['forged-1', 'forged-2']) {
      const missing = await expectError(call(replica.client, replica.client.getEvaluation, { evalId }));
      expect(missing.code, evalId).to.equal(grpcStatus.NOT_FOUND);
    }
    const { evaluation } = await call(replica.client, replica.client.getEvaluation, { evalId: 'hint-1' });
    expect(evaluation).to.include({ revision: '2', status: EvaluationStatus.EVALUATION_STATUS_RUNNING });
    const status = await call(replica.client, replica.client.getProjectionStatus, {});
    expect(status).to.include({ checkpoint: real.position, headPosition: real.position, lagPositions: '0' });
    expect(await consistency(h, layout)).to.deep.equal([]);
    await replica.close();
  });

  it('never skips a late commit: a second writer waits for the first, so positions commit in order', async () => {
    const replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
    const slow = new Client({ connectionString: h.config.databaseUrl });
    const probe = new Client({ connectionString: h.config.databaseUrl });
    await Promise.all([slow.connect(), probe.connect()]);
    try {
      // Writer A takes the next position and does not commit yet.
      await slow.query('BEGIN');
      await slow.query(
        `INSERT INTO evaluations (eval_id, status, code_hash, code_size, language, engine, timeout_seconds,
                                  created_at, updated_at, revision)
         VALUES ('late-a', 'queued', repeat('0', 64), 1, 'python', 'docker', 5, now(), now(), 1)`,
      );
      const taken = await slow.query<{ position: string }>(
        `UPDATE event_log_head SET position = position + 1 WHERE id = 1 RETURNING position::text AS position`,
      );
      const positionA = taken.rows[0]?.position ?? '';
      const at = new Date().toISOString();
      await slow.query(
        `INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, command_hash, recorded_at)
         VALUES ($1, 'late-a', 1, 'EvaluationQueued', $2, repeat('0', 64), $3)`,
        [
          positionA,
          JSON.stringify({
            codeHash: '0'.repeat(64),
            codeSize: 1,
            language: 'python',
            engine: 'docker',
            timeoutSeconds: 5,
            metadata: {},
            createdAt: at,
          }),
          at,
        ],
      );
      // Writer B tries to commit after it (and publish): it must wait for A's head row lock.
      const b = h.writer.submit('late-b', { publish: true });
      await until('writer B waits for the head row', async () => {
        const { rows } = await probe.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        );
        return (rows[0]?.n ?? 0) > 0;
      });
      // Meanwhile the projector reads the log: nothing new is visible, so nothing is skipped.
      const during = await call(replica.client, replica.client.getProjectionStatus, {});
      expect(BigInt(during.checkpoint)).to.equal(BigInt(positionA) - 1n);
      await slow.query('COMMIT');
      const recordedB = await b;
      expect(BigInt(recordedB.position)).to.equal(BigInt(positionA) + 1n);
      // B's message arrives with A's never published: a gap, filled from the log.
      await reached(replica, recordedB.position);
      const { evaluation } = await call(replica.client, replica.client.getEvaluation, { evalId: 'late-a' });
      expect(evaluation?.position).to.equal(positionA);
      expect(await consistency(h, layout)).to.deep.equal([]);
    } finally {
      await slow.end();
      await probe.end();
      await replica.close();
    }
  });

  it('ignores events at or below the checkpoint (re-applying a batch changes nothing)', async () => {
    const replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
    const eventLog = createPostgresEventLog(replica.pool);
    const applier = applierOn(h, layout, h.redis, eventLog);
    const { events } = await eventLog.readAfter(0n, 1000);
    const xlen = await h.redis.xlen(layout.changeLog(0));
    const history = await h.redis.llen(layout.history(0, 'start-0'));
    const result = await applier.apply(events);
    expect(result.applied).to.equal(0);
    expect(await h.redis.xlen(layout.changeLog(0))).to.equal(xlen);
    expect(await h.redis.llen(layout.history(0, 'start-0'))).to.equal(history);
    await replica.close();
  });

  it('replays over records ahead of a lost checkpoint without leaving an evaluation in an index it has left', async () => {
    const replica = await h.startReplica();
    const queued = await Promise.all(['ahead-0', 'ahead-1'].map((id) => h.writer.submit(id, { publish: true })));
    await reached(replica, queued[1]?.position ?? 0n);
    await replica.close();
    // The checkpoint is lost while the records stay: both are queued in their records and indexes.
    // Then they start, and one replay batch holds both their submits and their starts.
    await h.redis.del(...partitionNumbers(layout).map((p) => layout.checkpoint(p)));
    for (const id of ['ahead-0', 'ahead-1']) await h.writer.start(id, { publish: false });
    const pool = createPool({
      url: h.config.queryDatabaseUrl,
      readOnly: true,
      poolSize: 1,
      applicationName: 'crucible-query-it',
    });
    try {
      const eventLog = createPostgresEventLog(pool);
      const applier = applierOn(h, layout, h.redis, eventLog);
      const { events } = await eventLog.readAfter(0n, 100_000);
      await applier.apply(events);
    } finally {
      await pool.end();
    }
    const queuedIndex = layout.indexStatus(
      layout.partitionOf('ahead-0'),
      'default',
      EvaluationStatus.EVALUATION_STATUS_QUEUED,
    );
    const members = await h.redis.zrange(queuedIndex, 0, -1);
    expect(members.filter((m) => m.includes('ahead-'))).to.deep.equal([]);
    expect(await consistency(h, layout)).to.deep.equal([]);
  });

  /** Waits until the sweep took `evalId` out of its partition's queued index; then the read models are whole. */
  async function untilSweptFromQueued(evalId: string): Promise<void> {
    const queuedIndex = layout.indexStatus(
      layout.partitionOf(evalId),
      'default',
      EvaluationStatus.EVALUATION_STATUS_QUEUED,
    );
    await until(`the sweep took ${evalId} out of the queued index`, async () =>
      (await h.redis.zrange(queuedIndex, 0, -1)).every((member) => !member.endsWith(`:${evalId}`)),
    );
    expect(await consistency(h, layout)).to.deep.equal([]);
  }

  it('sweeps the indexes after a replay over lost data: an evaluation whose record went with the checkpoint leaves the index it left', async () => {
    const replica = await h.startReplica();
    try {
      const submitted = await h.writer.submit('swept-0', { publish: true });
      await reached(replica, submitted.position);
      // Started unannounced, then the checkpoint and the record go: the replay folds the
      // submit and the start from nothing, unaware that the queued index holds the evaluation.
      const started = await h.writer.start('swept-0', { publish: false });
      const p = layout.partitionOf('swept-0');
      expect(await h.redis.del(layout.checkpoint(p), layout.record(p, 'swept-0'))).to.equal(2);
      await reached(replica, started.position);
      await untilSweptFromQueued('swept-0');
    } finally {
      await replica.close();
    }
  });

  it('sweeps as well when it starts after the loss, having found records ahead of its replay', async () => {
    const before = await h.startReplica();
    const submitted = await h.writer.submit('swept-1', { publish: true });
    await reached(before, submitted.position);
    await before.close();
    await h.writer.start('swept-1', { publish: false });
    const p = layout.partitionOf('swept-1');
    expect(await h.redis.del(layout.checkpoint(p), layout.record(p, 'swept-1'))).to.equal(2);
    const replica = await h.startReplica();
    try {
      await replica.service.projector.whenCaughtUp();
      await untilSweptFromQueued('swept-1');
    } finally {
      await replica.close();
    }
  });

  it('keeps two racing appliers from applying anything twice', async () => {
    await lifecycles(h, 40, 'race', false);
    const replica = await h.startReplica({ overrides: { CATCH_UP_INTERVAL_MS: '60000' } });
    await replica.service.projector.whenCaughtUp();
    await replica.close();
    // Two appliers on separate connections apply the same new batch at the same moment.
    await lifecycles(h, 40, 'race2', false);
    const probe = await h.startReplica();
    const eventLog = createPostgresEventLog(probe.pool);
    const connections = [createRedisClient(redisTargetOf(h.config)), createRedisClient(redisTargetOf(h.config))];
    try {
      const from = (await createCheckpoints(h.redis, layout).readAll())[0] ?? 0n;
      const { events: batch } = await eventLog.readAfter(from, 10_000);
      const appliers = connections.map((redis) => applierOn(h, layout, redis, eventLog));
      const results = await Promise.all(appliers.map((a) => a.apply(batch)));
      // The probe replica may also have applied some (it was catching up): never more than once.
      await probe.service.projector.whenCaughtUp();
      expect(results.map((r) => r.applied).reduce((a, b) => a + b)).to.be.at.most(batch.length);
      expect(await consistency(h, layout)).to.deep.equal([]);
    } finally {
      for (const c of connections) c.disconnect();
      await probe.close();
    }
  });

  it('keeps two replicas on one Redis exactly-once under a burst of published changes', async () => {
    const [a, b] = await Promise.all([h.startReplica(), h.startReplica()]);
    if (a === undefined || b === undefined) throw new Error('replicas');
    await Promise.all([a.service.projector.whenCaughtUp(), b.service.projector.whenCaughtUp()]);
    const last = await lifecycles(h, 60, 'burst', true);
    await Promise.all([reached(a, last.position), reached(b, last.position)]);
    expect(await h.redis.xlen(layout.changeLog(0))).to.equal(Number(last.position));
    expect(await consistency(h, layout)).to.deep.equal([]);
    await Promise.all([a.close(), b.close()]);
  });

  it('rebuilds by itself when Redis lost the read models, serving only once caught up', async () => {
    const replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
    await h.flushReadModels();
    const next = await h.writer.submit('after-flush', { publish: true });
    await reached(replica, next.position);
    await replica.service.projector.whenCaughtUp();
    const { evaluation } = await call(replica.client, replica.client.getEvaluation, { evalId: 'start-0' });
    expect(evaluation?.revision).to.equal('3');
    expect(await consistency(h, layout)).to.deep.equal([]);
    await replica.close();
  });

  it('rebuilds from position 0 with the rebuild routine, and the checker names a broken record', async () => {
    const helper = await h.startReplica();
    try {
      await helper.service.projector.whenCaughtUp();
      const eventLog = createPostgresEventLog(helper.pool);
      const result = await rebuildReadModels({
        redis: h.redis,
        layout,
        eventLog,
        store: createRedisProjectionStore(h.redis, layout, h.config.streams.changeLogRetention),
        logger: silentLogger,
        batchSize: 50,
      });
      expect(result.checkpoint).to.equal(await eventLog.headPosition());
      expect(result.deletedKeys).to.be.greaterThan(0);
    } finally {
      await helper.close();
    }
    expect(await consistency(h, layout)).to.deep.equal([]);
    // Break one record and one index entry: the checker names both.
    await h.redis.del(layout.record(0, 'start-1'));
    const newest = (await h.redis.zrange(layout.indexAll(0, 'default'), -1, -1))[0] ?? '';
    await h.redis.zrem(layout.indexAll(0, 'default'), newest);
    const differences = await consistency(h, layout);
    expect(differences.some((d) => d.startsWith('start-1: record missing'))).to.equal(true);
    expect(differences.some((d) => d.includes('missing from the index of all evaluations'))).to.equal(true);
  });
});

/** Every read-model key of the layout and its content, read back logically (key names without the prefix). */
async function readModels(redis: RedisClient, layout: KeyLayout): Promise<Map<string, string>> {
  const keys: string[] = [];
  for await (const found of scanKeys(redis, layout.scanPattern, 1000)) keys.push(...found);
  const contents = new Map<string, string>();
  for (const key of keys.sort()) {
    const type = await redis.type(key);
    let values: (string | Buffer)[];
    if (type === 'string') values = [(await redis.getBuffer(key)) ?? Buffer.alloc(0)];
    else if (type === 'list') values = await redis.lrangeBuffer(key, 0, -1);
    else if (type === 'zset') values = await redis.zrange(key, 0, -1, 'WITHSCORES');
    else if (type === 'hash')
      values = Object.entries(await redis.hgetall(key))
        .sort()
        .flat();
    else if (type === 'stream')
      values = (await redis.xrangeBuffer(key, '-', '+')).flatMap(([id, fields]) => [id, ...fields]);
    else throw new Error(`unexpected ${type} at ${key}`);
    contents.set(key.split(layout.prefix).join('P'), `${type} ${values.map((v) => v.toString('hex')).join(' ')}`);
  }
  return contents;
}

describe('query projection with partitioned read models', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let layout: KeyLayout;

  before(async () => {
    h = await createQueryHarness({ READ_MODEL_PARTITIONS: '3', CATCH_UP_INTERVAL_MS: '60000' });
    layout = createKeyLayout(h.config.redisKeyPrefix, h.config.readModelPartitions);
  });
  after(async () => {
    await h.close();
  });

  it('spreads evaluations over partitions, advances every checkpoint, and stays consistent', async () => {
    await lifecycles(h, 30, 'part', false);
    const [a, b] = await Promise.all([h.startReplica(), h.startReplica()]);
    if (a === undefined || b === undefined) throw new Error('replicas');
    await Promise.all([a.service.projector.whenCaughtUp(), b.service.projector.whenCaughtUp()]);
    const last = await lifecycles(h, 30, 'part-live', true);
    await Promise.all([reached(a, last.position), reached(b, last.position)]);
    const checkpoints = await createCheckpoints(h.redis, layout).readAll();
    expect(checkpoints).to.deep.equal([0, 1, 2].map(() => BigInt(last.position)));
    const lengths = await Promise.all(partitionNumbers(layout).map((p) => h.redis.xlen(layout.changeLog(p))));
    expect(lengths.every((n) => n > 0)).to.equal(true);
    expect(lengths.reduce((x, y) => x + y)).to.equal(Number(last.position));
    expect(await consistency(h, layout)).to.deep.equal([]);
    const status = await call(a.client, a.client.getProjectionStatus, {});
    expect(status.partitionCheckpoints).to.deep.equal([last.position, last.position, last.position]);
    await Promise.all([a.close(), b.close()]);
  });

  it('rebuilds the same read models when it must read states back and when another applier races it', async () => {
    await lifecycles(h, 40, 'rebuild-race', false);
    const replica = await h.startReplica();
    const eventLog = createPostgresEventLog(replica.pool);
    const retention = h.config.streams.changeLogRetention;
    const racer = createRedisClient(redisTargetOf(h.config), { maxRetriesPerRequest: 1 });
    try {
      await replica.service.projector.stop();
      const head = await eventLog.headPosition();
      const small = { batchSize: 7, writeSize: 3 };
      const rebuild = (options: Partial<Parameters<typeof rebuildReadModels>[0]>) =>
        rebuildReadModels({
          redis: h.redis,
          layout,
          eventLog,
          store: createRedisProjectionStore(h.redis, layout, retention),
          logger: silentLogger,
          ...small,
          ...options,
        });

      // Reference: no state kept in memory, so every later event of an evaluation reads its state back.
      expect((await rebuild({ stateCacheSize: 0 })).checkpoint).to.equal(head);
      const expected = await readModels(h.redis, layout);
      expect(await consistency(h, layout)).to.deep.equal([]);

      // Before some of the rebuild's writes, another applier applies the next events first. The
      // fence keeps replicas out of a rebuild, so this racer passes it with the rebuild's own
      // token: what a replica could do if the fence expired under a stalled rebuild.
      let fenceToken: string | undefined;
      const racerStore = createRedisProjectionStore(racer, layout, retention);
      const racing = createProjectionApplier({
        store: { load: (ids) => racerStore.load(ids), write: (w) => racerStore.write(w, fenceToken) },
        eventLog,
        layout,
        logger: silentLogger,
      });
      const racerCheckpoints = createCheckpoints(racer, layout);
      const inner = createRedisProjectionStore(h.redis, layout, retention);
      let writes = 0;
      const messages: string[] = [];
      const result = await rebuild({
        store: {
          load: (ids) => inner.load(ids),
          async write(partitionWrites, token) {
            fenceToken = token;
            writes += 1;
            if (writes % 5 === 3) {
              const from = (await racerCheckpoints.readAll()).reduce((m, c) => (c < m ? c : m));
              await racing.apply((await eventLog.readAfter(from, 4)).events);
            }
            return inner.write(partitionWrites, token);
          },
        },
        logger: { ...silentLogger, info: (msg: string) => void messages.push(msg) },
      });
      expect(result.checkpoint).to.equal(head);
      expect(messages.filter((m) => m.includes('moved under it')).length).to.be.greaterThan(0);
      expect(await readModels(h.redis, layout)).to.deep.equal(expected);
      expect(await consistency(h, layout)).to.deep.equal([]);
    } finally {
      racer.disconnect();
      await replica.close();
    }
  });
});
