import { expect } from 'chai';
import { EvaluationStatus, EventType } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type {
  WatchEvaluationResponse,
  WatchEvaluationsResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { captureLog } from '../../support/log-capture';
import { createShutdown } from '../../../services/query/live/shutdown';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';
import { readStream, type StreamReader } from '../../support/clients';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';
import { createChangeLog } from '../../../services/query/redis/change-log';
import { createMetadataSource } from '../../../services/query/redis/metadata-source';
import { createUndecodableEntries } from '../../../services/query/redis/undecodable-entries';
import { CHANGE_LOG_READ_BYTES } from '../../../services/query/read-models/change-log';
import { silentLogger } from '../../../shared/logging';
import { createPostgresMetadataFromLog } from '../../../services/query/postgres/event-log';

/** Metadata large enough that every copy of it shows in Redis' memory figures. */
const METADATA = { suite: 'lean', blob: 'm'.repeat(16 * 1024), nested: { list: [1, 'two', true, null] } };

type Message = WatchEvaluationResponse | WatchEvaluationsResponse;

/** Every message up to the stream's end, or up to and including the first caught_up. */
async function untilCaughtUp<T extends Message>(reader: StreamReader<T>): Promise<T[]> {
  const got: T[] = [];
  for (;;) {
    const m = await reader.next();
    if (m.progress !== undefined) continue;
    got.push(m);
    if (m.caughtUp !== undefined) return got;
  }
}

/** The updates' (revision, event type, status, metadata) as clients decode them. */
function updatesOf(messages: readonly Message[]): [string, EventType, EvaluationStatus, unknown][] {
  return messages.flatMap((m) =>
    m.update === undefined
      ? []
      : [
          [
            m.update.revision,
            m.update.eventType,
            m.update.evaluation?.status ?? EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED,
            m.update.evaluation?.metadata,
          ] as [string, EventType, EvaluationStatus, unknown],
        ],
  );
}

const LIFE: [string, EventType, EvaluationStatus, unknown][] = [
  ['1', EventType.EVENT_TYPE_EVALUATION_QUEUED, EvaluationStatus.EVALUATION_STATUS_QUEUED, METADATA],
  ['2', EventType.EVENT_TYPE_EVALUATION_STARTED, EvaluationStatus.EVALUATION_STATUS_RUNNING, METADATA],
  ['3', EventType.EVENT_TYPE_EVALUATION_COMPLETED, EvaluationStatus.EVALUATION_STATUS_COMPLETED, METADATA],
];

describe('read models store the metadata once and drop the history of ended evaluations', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let replica: Replica;
  let layout: KeyLayout;
  const log = captureLog();
  const logged = (pattern: RegExp): Promise<void> => log.next(pattern);

  const caughtUpTo = (position: string): Promise<void> =>
    replica.service.hub.waitForPosition(BigInt(position), {
      signal: new AbortController().signal,
      shutdown: createShutdown().shutdown,
      deadline: undefined,
    });

  const live = async (evalId: string): Promise<{ submitted: string; started: string; completed: string }> => {
    const submitted = (await h.writer.submit(evalId, { metadata: METADATA, publish: true })).position;
    const started = (await h.writer.start(evalId, { publish: true })).position;
    const completed = (await h.writer.complete(evalId, { publish: true })).position;
    await caughtUpTo(completed);
    return { submitted, started, completed };
  };

  before(async () => {
    h = await createQueryHarness({ STREAM_PROGRESS_INTERVAL_MS: '50' });
    layout = createKeyLayout(h.config.redisKeyPrefix, h.config.readModelPartitions);
    replica = await h.startReplica({
      logger: log.logger,
    });
    await replica.service.projector.whenCaughtUp();
  });
  after(async () => {
    await h.close();
  });

  it('an ended evaluation keeps its record and index entries only; later change-log entries carry no metadata', async () => {
    const evalId = 'lean-1';
    await live(evalId);
    const p = layout.partitionOf(evalId);
    expect(await h.redis.exists(layout.history(p, evalId))).to.equal(0);
    const record = await h.redis.getBuffer(layout.record(p, evalId));
    expect(record?.length).to.be.above(16 * 1024);
    const entries = (await h.redis.xrangeBuffer(layout.changeLog(p), '-', '+')).filter(
      ([, fields]) => fields[fields.findIndex((f) => f.toString() === 'e') + 1]?.toString() === evalId,
    );
    const sizes = entries.map(([, fields]) => fields[1]?.length ?? 0);
    expect(sizes).to.have.length(3);
    // The submit carries it (the first sight of the evaluation, and the live tail's cache), the
    // others do not: each of them is a small fraction of the metadata.
    expect(sizes[0]).to.be.above(16 * 1024);
    expect(sizes[1]).to.be.below(1024);
    expect(sizes[2]).to.be.below(1024);
    // What Redis spends on the evaluation beyond the change log: the record, once.
    const usage = Number(await h.redis.memory('USAGE', layout.record(p, evalId)));
    expect(usage).to.be.below(16 * 1024 * 1.5);
  });

  it('clients still receive whole states: the last update from the record, older ones from the log', async () => {
    const evalId = 'lean-2';
    await live(evalId);
    const current = await untilCaughtUp(readStream(replica.client.watchEvaluation({ evalId })));
    expect(updatesOf(current)).to.deep.equal(LIFE.slice(2));
    const all = await untilCaughtUp(readStream(replica.client.watchEvaluation({ evalId, afterRevision: '0' })));
    expect(updatesOf(all)).to.deep.equal(LIFE);
    const later = await untilCaughtUp(readStream(replica.client.watchEvaluation({ evalId, afterRevision: '1' })));
    expect(updatesOf(later)).to.deep.equal(LIFE.slice(1));
  });

  it('a running evaluation replays its history with the metadata of its first entry', async () => {
    const evalId = 'lean-3';
    await h.writer.submit(evalId, { metadata: METADATA, publish: true });
    await caughtUpTo((await h.writer.start(evalId, { publish: true })).position);
    const p = layout.partitionOf(evalId);
    expect(await h.redis.llen(layout.history(p, evalId))).to.equal(2);
    const reader = readStream(replica.client.watchEvaluation({ evalId, afterRevision: '0' }));
    expect(updatesOf(await untilCaughtUp(reader))).to.deep.equal(LIFE.slice(0, 2));
    const current = await untilCaughtUp(readStream(replica.client.watchEvaluation({ evalId })));
    expect(updatesOf(current)).to.deep.equal(LIFE.slice(1, 2));
    await h.writer.complete(evalId, { publish: true });
    // Live, then the end: the terminal update comes whole from the tail.
    const rest: Message[] = [];
    for (;;) {
      const m = await reader.next().catch(() => undefined);
      if (m === undefined) break;
      if (m.update !== undefined) rest.push(m);
    }
    expect(updatesOf(rest)).to.deep.equal(LIFE.slice(2));
  });

  it('the firehose replays and streams whole states, from the cache, the records, or the log', async () => {
    const before = (await h.writer.submit('lean-4-pre', { publish: true })).position;
    await caughtUpTo(before);
    const watcher = readStream(replica.client.watchEvaluations({ statuses: [], evalIds: ['lean-4'] }));
    await untilCaughtUp(watcher);
    await live('lean-4');
    const streamed: Message[] = [];
    while (streamed.length < 3) {
      const m = await watcher.next();
      if (m.update !== undefined) streamed.push(m);
    }
    expect(updatesOf(streamed)).to.deep.equal(LIFE);
    watcher.cancel();

    const replay = async (on: Replica): Promise<Message[]> =>
      untilCaughtUp(
        readStream(on.client.watchEvaluations({ statuses: [], evalIds: ['lean-4'], afterPosition: before })),
      );
    // This replica learnt the metadata from the submit; a new one must read it from the record.
    expect(updatesOf(await replay(replica))).to.deep.equal(LIFE);
    const fresh = await h.startReplica();
    try {
      await fresh.service.projector.whenCaughtUp();
      expect(updatesOf(await replay(fresh))).to.deep.equal(LIFE);
    } finally {
      await fresh.close();
    }
    // The record gone too (a lost key): from the submit event in the log.
    const other = await h.startReplica({ overrides: { REDIS_KEYSPACE_EVENTS: 'false' } });
    try {
      await other.service.projector.whenCaughtUp();
      const p = layout.partitionOf('lean-4');
      await h.redis.del(layout.record(p, 'lean-4'));
      expect(updatesOf(await replay(other))).to.deep.equal(LIFE);
    } finally {
      await other.close();
    }
  });

  it('a replay holds at most its byte budget of whole updates, however small the stored entries', async () => {
    const big = { blob: 'b'.repeat(300 * 1024) };
    const evalIds = Array.from({ length: 20 }, (_, i) => `lean-big-${String(i).padStart(2, '0')}`);
    for (const id of evalIds) await h.writer.submit(id, { metadata: big, publish: true });
    const submitted = (await h.writer.start(evalIds[0] as string, { publish: true })).position;
    for (const id of evalIds.slice(1)) await h.writer.start(id, { publish: true });
    const last = (await h.writer.submit('lean-big-end', { publish: true })).position;
    await caughtUpTo(last);
    // A replica that never saw the submits: every start's metadata comes from the records.
    const changeLog = createChangeLog(
      h.redis,
      layout,
      createUndecodableEntries(silentLogger),
      createMetadataSource({
        redis: h.redis,
        layout,
        fromLog: createPostgresMetadataFromLog(replica.pool),
        maxBytes: 1 << 20,
      }),
    );
    const read = await changeLog.readAfter(BigInt(submitted) - 1n, 1000);
    const bytes = read.entries.reduce((sum, e) => sum + e.change.update.bytes.length, 0);
    expect(read.complete).to.equal(false);
    expect(read.entries.length).to.be.within(1, 19);
    expect(bytes).to.be.at.most(CHANGE_LOG_READ_BYTES);
    expect(read.entries.map((e) => e.change.update.message.evaluation?.metadata)).to.deep.equal(
      read.entries.map(() => big),
    );
  });

  it("the projection's own deletions of ended histories are not taken for lost keys, and the checker is clean", async () => {
    const before = log.lines.length;
    for (let i = 0; i < 10; i += 1) await live(`lean-5-${i}`);
    // A lost history of an evaluation still running is repaired, as before.
    const evalId = 'lean-5-running';
    await caughtUpTo((await h.writer.submit(evalId, { metadata: METADATA, publish: true })).position);
    const p = layout.partitionOf(evalId);
    await h.redis.del(layout.history(p, evalId));
    await logged(/rewritten from the log/);
    expect(await h.redis.llen(layout.history(p, evalId))).to.equal(1);
    const repairs = log.lines.slice(before).filter((l) => /rewritten from the log/.test(String(l.msg)));
    expect(repairs.map((l) => l.first)).to.deep.equal([evalId]);
    expect(await h.differences(layout)).to.deep.equal([]);
  });
});
