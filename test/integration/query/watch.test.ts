import { status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { Registry } from 'prom-client';
import { EvaluationStatus, EventType } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type {
  WatchEvaluationResponse,
  WatchEvaluationsRequest,
  WatchEvaluationsResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { readStream, type StreamReader } from '../../support/clients';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';
import { createShutdown } from '../../../services/query/live/shutdown';

type Message = WatchEvaluationResponse | WatchEvaluationsResponse;

const describeMessage = (m: Message): string =>
  m.update !== undefined
    ? `update ${m.update.evaluation?.evalId}@${m.update.revision} (${m.update.position})`
    : m.caughtUp !== undefined
      ? `caught_up ${m.caughtUp.position}`
      : `progress ${m.progress?.position}`;

/** The next message that is not a progress message. */
async function nextChange<T extends Message>(reader: StreamReader<T>): Promise<T> {
  for (;;) {
    const m = await reader.next();
    if (m.progress === undefined) return m;
  }
}

async function changes<T extends Message>(reader: StreamReader<T>, n: number): Promise<string[]> {
  const got: string[] = [];
  for (let i = 0; i < n; i += 1) got.push(describeMessage(await nextChange(reader)));
  return got;
}

function watch(replica: Replica, evalId: string, afterRevision?: string): StreamReader<WatchEvaluationResponse> {
  return readStream(
    replica.client.watchEvaluation({ evalId, ...(afterRevision !== undefined ? { afterRevision } : {}) }),
  );
}

function firehose(
  replica: Replica,
  request: Partial<WatchEvaluationsRequest> = {},
): StreamReader<WatchEvaluationsResponse> {
  return readStream(replica.client.watchEvaluations({ statuses: [], evalIds: [], ...request }));
}

async function cancelled(reader: StreamReader<Message>): Promise<void> {
  reader.cancel();
  const err = await reader.finished;
  expect(err?.code).to.equal(grpcStatus.CANCELLED);
}

describe('query streams: WatchEvaluation and WatchEvaluations', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let replica: Replica;

  before(async () => {
    h = await createQueryHarness({
      STREAM_PROGRESS_INTERVAL_MS: '50',
      CHANGE_LOG_RETENTION: '100',
      STREAM_BUFFER_LIMIT: '5',
    });
    replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
  });
  after(async () => {
    await h.close();
  });

  describe('WatchEvaluation', () => {
    it('sends the current state, caught_up, every change, and ends after a terminal state', async () => {
      const queued = await h.writer.submit('w-1', { publish: true });
      await replica.service.hub.waitForPosition(BigInt(queued.position), {
        signal: new AbortController().signal,
        shutdown: createShutdown().shutdown,
        deadline: undefined,
      });
      const reader = watch(replica, 'w-1');
      const first = await nextChange(reader);
      expect(first.update).to.deep.include({
        revision: '1',
        position: queued.position,
        eventType: EventType.EVENT_TYPE_EVALUATION_QUEUED,
      });
      expect(first.update?.evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_QUEUED);
      expect((await nextChange(reader)).caughtUp?.position).to.equal(queued.position);
      const started = await h.writer.start('w-1', { publish: true });
      const done = await h.writer.complete('w-1', { publish: true });
      expect(await changes(reader, 2)).to.deep.equal([
        `update w-1@2 (${started.position})`,
        `update w-1@3 (${done.position})`,
      ]);
      expect(await reader.finished).to.equal(undefined); // ended OK after the terminal state
      expect(replica.service.hub.listenerCount).to.equal(0);
    });

    it('replays revisions after after_revision, and ends at once for a client that saw the end', async () => {
      await h.writer.submit('w-2');
      await h.writer.start('w-2');
      const last = await h.writer.cancel('w-2', { publish: true });
      await replica.service.hub.waitForPosition(BigInt(last.position), {
        signal: new AbortController().signal,
        shutdown: createShutdown().shutdown,
        deadline: undefined,
      });
      const resumed = watch(replica, 'w-2', '1');
      expect(await changes(resumed, 3)).to.deep.equal([
        `update w-2@2 (${BigInt(last.position) - 1n})`,
        `update w-2@3 (${last.position})`,
        `caught_up ${last.position}`,
      ]);
      expect(await resumed.finished).to.equal(undefined);
      const seen = watch(replica, 'w-2', '3');
      expect(describeMessage(await nextChange(seen))).to.match(/^caught_up /);
      expect(await seen.finished).to.equal(undefined);
    });

    it('is NOT_FOUND for an unknown evaluation, and cleans up when the client cancels', async () => {
      const unknown = watch(replica, 'nobody');
      const err = (await unknown.finished) as ServiceError;
      expect(err.code).to.equal(grpcStatus.NOT_FOUND);
      const queued = await h.writer.submit('w-3', { publish: true });
      await replica.service.hub.waitForPosition(BigInt(queued.position), {
        signal: new AbortController().signal,
        shutdown: createShutdown().shutdown,
        deadline: undefined,
      });
      const reader = watch(replica, 'w-3');
      await nextChange(reader);
      await nextChange(reader);
      expect(replica.service.hub.listenerCount).to.equal(1);
      // Progress messages keep an idle watcher informed.
      let m = await reader.next();
      while (m.progress === undefined) m = await reader.next();
      expect(BigInt(m.progress.position) >= BigInt(queued.position)).to.equal(true);
      await cancelled(reader);
      await until(() => replica.service.hub.listenerCount === 0);
    });

    it('has no gap and no duplicate at the replay/live seam under concurrent writes', async () => {
      const ids = Array.from({ length: 30 }, (_, i) => `seam-${i}`);
      for (const id of ids) await h.writer.submit(id, { publish: true });
      // Watchers open while their evaluations change underneath.
      const readers = new Map<string, StreamReader<WatchEvaluationResponse>>();
      const writes = (async () => {
        for (const id of ids) {
          readers.set(id, watch(replica, id, '0'));
          await h.writer.start(id, { publish: true });
          await h.writer.complete(id, { publish: true });
        }
      })();
      await writes;
      for (const id of ids) {
        const reader = readers.get(id);
        if (reader === undefined) throw new Error(id);
        const revisions: string[] = [];
        for (;;) {
          const m = await nextChange(reader);
          if (m.update !== undefined) revisions.push(m.update.revision);
          if (m.update?.evaluation?.status === EvaluationStatus.EVALUATION_STATUS_COMPLETED) break;
        }
        expect(revisions, id).to.deep.equal(['1', '2', '3']);
        expect(await reader.finished, id).to.equal(undefined);
      }
    });
  });

  describe('WatchEvaluations', () => {
    it('goes live from now without after_position, in global order', async () => {
      const reader = firehose(replica);
      const marker = await nextChange(reader);
      expect(marker.caughtUp?.position).to.equal(String(replica.service.hub.appliedPosition));
      const a = await h.writer.submit('f-1', { publish: true });
      const b = await h.writer.submit('f-2', { publish: true });
      const c = await h.writer.start('f-1', { publish: true });
      expect(await changes(reader, 3)).to.deep.equal([
        `update f-1@1 (${a.position})`,
        `update f-2@1 (${b.position})`,
        `update f-1@2 (${c.position})`,
      ]);
      await cancelled(reader);
    });

    it('replays after after_position, then goes live with nothing lost or repeated', async () => {
      const from = await h.writer.submit('r-0', { publish: true });
      const written = [];
      for (let i = 1; i <= 20; i += 1) written.push(await h.writer.submit(`r-${i}`, { publish: i % 2 === 0 }));
      const reader = firehose(replica, { afterPosition: from.position });
      const live = (async () => {
        for (let i = 21; i <= 30; i += 1) written.push(await h.writer.submit(`r-${i}`, { publish: true }));
      })();
      const received: string[] = [];
      let caughtUp = false;
      while (received.length < 30) {
        const m = await nextChange(reader);
        if (m.caughtUp !== undefined) caughtUp = true;
        else received.push(m.update?.position ?? '?');
      }
      await live;
      expect(caughtUp).to.equal(true);
      expect(received).to.deep.equal(written.map((w) => w.position));
      await cancelled(reader);
    });

    it('filters by status and ids, and still reports the position reached in progress messages', async () => {
      const reader = firehose(replica, {
        statuses: [EvaluationStatus.EVALUATION_STATUS_RUNNING],
        evalIds: ['flt-1', 'flt-2'],
      });
      await nextChange(reader);
      await h.writer.submit('flt-1', { publish: true });
      await h.writer.submit('flt-3', { publish: true });
      await h.writer.start('flt-3', { publish: true });
      const wanted = await h.writer.start('flt-1', { publish: true });
      const last = await h.writer.submit('flt-4', { publish: true });
      expect(await changes(reader, 1)).to.deep.equal([`update flt-1@2 (${wanted.position})`]);
      let m = await reader.next();
      while (!(m.progress !== undefined && m.progress.position === last.position)) m = await reader.next();
      await cancelled(reader);
    });

    it('answers OUT_OF_RANGE with the oldest resumable position once the change log was trimmed', async () => {
      // Retention is 100 entries; write well past it (MAXLEN ~ trims whole nodes).
      let last;
      for (let i = 0; i < 400; i += 1) last = await h.writer.submit(`trim-${i}`, { publish: true });
      if (last === undefined) throw new Error('nothing written');
      await replica.service.hub.waitForPosition(BigInt(last.position), {
        signal: new AbortController().signal,
        shutdown: createShutdown().shutdown,
        deadline: undefined,
      });
      const old = firehose(replica, { afterPosition: '0' });
      const err = (await old.finished) as ServiceError;
      expect(err.code).to.equal(grpcStatus.OUT_OF_RANGE);
      const match = /^oldest resumable position is (\d+); re-read state with ListEvaluations and resume from \1$/.exec(
        err.details,
      );
      expect(match, err.details).to.not.equal(null);
      const oldest = match?.[1] ?? '0';
      expect(BigInt(oldest) > 0n).to.equal(true);
      const resumed = firehose(replica, { afterPosition: oldest });
      const first = await nextChange(resumed);
      expect(first.update?.position).to.equal(String(BigInt(oldest) + 1n));
      await cancelled(resumed);
    });

    it('ends a client that fell further behind than the change log keeps with OUT_OF_RANGE', async () => {
      const stream = replica.client.watchEvaluations({ statuses: [], evalIds: [] });
      const reader = slowClient(stream);
      await reader.caughtUp;
      stream.pause();
      for (let i = 0; i < 300; i += 1) await h.writer.submit(`gone-${i}`, { publish: true, metadata: BIG });
      stream.resume();
      const err = await reader.error;
      expect(err.code).to.equal(grpcStatus.OUT_OF_RANGE);
      expect(err.details).to.match(/^oldest resumable position is \d+; /);
    });
  });
});

const BIG = { blob: 'x'.repeat(4000) };

/** A firehose client that records updates and says when it is caught up or failed. */
function slowClient(stream: ReturnType<Replica['client']['watchEvaluations']>) {
  const received: string[] = [];
  let onCaughtUp: () => void = () => undefined;
  let onError: (err: ServiceError) => void = () => undefined;
  const caughtUp = new Promise<void>((resolve) => (onCaughtUp = resolve));
  const error = new Promise<ServiceError>((resolve) => (onError = resolve));
  stream.on('data', (m: WatchEvaluationsResponse) => {
    if (m.caughtUp !== undefined) onCaughtUp();
    if (m.update !== undefined) received.push(m.update.position);
  });
  stream.on('error', (err: ServiceError) => onError(err));
  return { received, caughtUp, error };
}

describe('query streams: a slow WatchEvaluations client', function () {
  this.timeout(60_000);
  let h: QueryHarness;

  before(async () => {
    h = await createQueryHarness({ STREAM_BUFFER_LIMIT: '5' });
  });
  after(async () => {
    await h.close();
  });

  it('stays bounded: its buffer is dropped, it re-reads, and still gets every change once, in order', async () => {
    let onFallback: () => void = () => undefined;
    const fellBack = new Promise<void>((resolve) => (onFallback = resolve));
    const registry = new Registry();
    const replica = await h.startReplica({ service: { registry, onSlowConsumer: () => onFallback() } });
    await replica.service.projector.whenCaughtUp();
    const stream = replica.client.watchEvaluations({ statuses: [], evalIds: [] });
    const client = slowClient(stream);
    await client.caughtUp;
    stream.pause(); // the client stops reading; HTTP/2 flow control soon stops the server's writes
    const written: string[] = [];
    for (let i = 0; i < 300; i += 1)
      written.push((await h.writer.submit(`slow-${i}`, { publish: true, metadata: BIG })).position);
    await fellBack;
    // The metrics see it: one fallback, and never more held than the limit.
    const metric = async (name: string): Promise<number | undefined> =>
      (await registry.getSingleMetric(name)?.get())?.values[0]?.value;
    expect(await metric('crucible_stream_slow_client_fallbacks_total')).to.be.at.least(1);
    expect(await metric('crucible_stream_buffered_changes')).to.be.within(0, 5);
    let onAll: () => void = () => undefined;
    const all = new Promise<void>((resolve) => (onAll = resolve));
    stream.on('data', () => {
      if (client.received.length >= written.length) onAll();
    });
    stream.resume();
    await all;
    expect(client.received).to.deep.equal(written);
    stream.cancel();
    await replica.close();
  });
});

/** Re-checks a local condition after each turn of the event loop's I/O (no timers). */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !condition(); i += 1) await new Promise((resolve) => setImmediate(resolve));
  expect(condition()).to.equal(true);
}

describe('query streams on shutdown', function () {
  this.timeout(60_000);
  let h: QueryHarness;

  before(async () => {
    h = await createQueryHarness();
  });
  after(async () => {
    await h.close();
  });

  it('ends open streams with UNAVAILABLE naming the position or revision to resume from', async () => {
    const replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
    const queued = await h.writer.submit('bye', { publish: true });
    await replica.service.hub.waitForPosition(BigInt(queued.position), {
      signal: new AbortController().signal,
      shutdown: createShutdown().shutdown,
      deadline: undefined,
    });
    const all = firehose(replica, { afterPosition: '0' });
    const one = watch(replica, 'bye');
    expect(await changes(all, 2)).to.deep.equal([`update bye@1 (${queued.position})`, `caught_up ${queued.position}`]);
    expect(await changes(one, 2)).to.deep.equal([`update bye@1 (${queued.position})`, `caught_up ${queued.position}`]);
    const closing = replica.close();
    const [allErr, oneErr] = (await Promise.all([all.finished, one.finished])) as ServiceError[];
    await closing;
    expect(allErr?.code).to.equal(grpcStatus.UNAVAILABLE);
    expect(allErr?.details).to.equal(`server shutting down; resume from position ${queued.position}`);
    expect(oneErr?.code).to.equal(grpcStatus.UNAVAILABLE);
    expect(oneErr?.details).to.equal('server shutting down; resume from revision 1');
  });
});

describe('query streams over partitioned read models', function () {
  this.timeout(60_000);
  let h: QueryHarness;

  before(async () => {
    h = await createQueryHarness({ READ_MODEL_PARTITIONS: '3' });
  });
  after(async () => {
    await h.close();
  });

  it('replays the partitions merged in global order, across many pages, then goes live', async () => {
    const written: string[] = [];
    for (let i = 0; i < 700; i += 1) written.push((await h.writer.submit(`pp-${i}`)).position);
    const replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
    const reader = firehose(replica, { afterPosition: '0' });
    const received: string[] = [];
    for (;;) {
      const m = await nextChange(reader);
      if (m.caughtUp !== undefined) break;
      received.push(m.update?.position ?? '?');
    }
    expect(received).to.deep.equal(written);
    const live = await h.writer.start('pp-3', { publish: true });
    expect(await changes(reader, 1)).to.deep.equal([`update pp-3@2 (${live.position})`]);
    await cancelled(reader);
    const one = watch(replica, 'pp-3');
    expect(await changes(one, 2)).to.deep.equal([`update pp-3@2 (${live.position})`, `caught_up ${live.position}`]);
    await cancelled(one);
  });
});
