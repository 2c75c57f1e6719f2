import { Metadata, status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import type { RecordedEvent } from '../../../shared/domain';
import { EvaluationStatus, EventType } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type {
  EventLogEntry,
  GetEvaluationEventsRequest,
  WaitEvaluationResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import type { ChangeHub } from '../../../services/query/live/change-hub';
import { createShutdown } from '../../../services/query/live/shutdown';
import { encodeScopedToken } from '../../../services/query/domain/page-tokens';
import { call, expectError, statusDetails } from '../../support/clients';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

const RUNNING = EvaluationStatus.EVALUATION_STATUS_RUNNING;
const COMPLETED = EvaluationStatus.EVALUATION_STATUS_COMPLETED;

/** What a page of GetEvaluationEvents should say of an event the writer recorded. */
function entryOf(recorded: RecordedEvent, type: EventType): EventLogEntry {
  return {
    eventType: type,
    revision: recorded.revision,
    position: recorded.position,
    recordedAt: new Date(recorded.recordedAt),
    data: JSON.parse(JSON.stringify(recorded.event.data)) as Record<string, unknown>,
    // This suite's writer is not the command service: it records no reporter.
    reporter: '',
  };
}

function events(replica: Replica, request: Partial<GetEvaluationEventsRequest>) {
  return call(replica.client, replica.client.getEvaluationEvents, {
    evalId: '',
    afterRevision: '0',
    pageSize: 0,
    pageToken: '',
    ...request,
  });
}

/** Every page from the first, following next_page_token. */
async function allPages(
  replica: Replica,
  request: Partial<GetEvaluationEventsRequest>,
): Promise<{ pages: EventLogEntry[][]; tokens: string[] }> {
  const pages: EventLogEntry[][] = [];
  const tokens: string[] = [];
  let pageToken = '';
  do {
    const page = await events(replica, { ...request, pageToken });
    pages.push(page.events);
    tokens.push(page.nextPageToken);
    pageToken = page.nextPageToken;
  } while (pageToken !== '' && pages.length < 100);
  return { pages, tokens };
}

function violationsOf(err: ServiceError): string[] {
  return statusDetails(err).badRequest?.fieldViolations.map((v) => `${v.field}:${v.reason}`) ?? [];
}

/**
 * Resolves when a handler subscribes to `evalId`'s changes on the replica's hub, then when it
 * unsubscribes: the server's own events, so that a test acts while a wait is known to wait.
 */
function watchSubscriptions(
  hub: ChangeHub,
  evalId: string,
): { subscribed: Promise<void>; unsubscribed: Promise<void> } {
  const original = hub.onEvaluation.bind(hub);
  let onSubscribed = (): void => undefined;
  let onUnsubscribed = (): void => undefined;
  const subscribed = new Promise<void>((resolve) => (onSubscribed = resolve));
  const unsubscribed = new Promise<void>((resolve) => (onUnsubscribed = resolve));
  hub.onEvaluation = (id, listener) => {
    const unsubscribe = original(id, listener);
    if (id !== evalId) return unsubscribe;
    hub.onEvaluation = original;
    onSubscribed();
    return () => {
      unsubscribe();
      onUnsubscribed();
    };
  };
  return { subscribed, unsubscribed };
}

/** A WaitEvaluation call, with a deadline `deadlineMs` away (none when undefined); `cancel()` cancels it. */
function waitCall(
  replica: Replica,
  evalId: string,
  deadlineMs: number | undefined,
): { answer: Promise<WaitEvaluationResponse>; cancel(): void } {
  let cancel = (): void => undefined;
  const answer = new Promise<WaitEvaluationResponse>((resolve, reject) => {
    const options = deadlineMs === undefined ? {} : { deadline: new Date(Date.now() + deadlineMs) };
    const unary = replica.client.waitEvaluation({ evalId }, new Metadata(), options, (err, response) => {
      if (err !== null) reject(err);
      else resolve(response);
    });
    cancel = () => unary.cancel();
  });
  answer.catch(() => undefined);
  return { answer, cancel };
}

async function applied(replica: Replica, recorded: RecordedEvent): Promise<void> {
  await replica.service.hub.waitForPosition(BigInt(recorded.position), {
    signal: new AbortController().signal,
    shutdown: createShutdown().shutdown,
    deadline: new Date(Date.now() + 10_000),
  });
}

describe('GetEvaluationEvents and WaitEvaluation', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let replica: Replica;

  before(async () => {
    // One open call per connection: a wait that was not given back shows as RESOURCE_EXHAUSTED.
    h = await createQueryHarness({ MAX_STREAMS_PER_CONNECTION: '1' });
    replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
  });
  after(async () => {
    await h.close();
  });

  describe('GetEvaluationEvents', () => {
    it("returns an evaluation's events in revision order: type, revision, position, time and data", async () => {
      const queued = await h.writer.submit('ev-1', { metadata: { suite: 'audit', nested: { list: [1, 'a', null] } } });
      await h.writer.submit('ev-other'); // another evaluation's event between: positions are not revisions
      const started = await h.writer.start('ev-1');
      const completed = await h.writer.complete('ev-1', {
        output: { previewBase64: 'NDIK', size: 3, location: 'postgres' },
      });
      const page = await events(replica, { evalId: 'ev-1' });
      expect(page.nextPageToken).to.equal('');
      expect(page.events).to.deep.equal([
        entryOf(queued, EventType.EVENT_TYPE_EVALUATION_QUEUED),
        entryOf(started, EventType.EVENT_TYPE_EVALUATION_STARTED),
        entryOf(completed, EventType.EVENT_TYPE_EVALUATION_COMPLETED),
      ]);
      expect(page.events[0]?.data?.metadata).to.deep.equal({ suite: 'audit', nested: { list: [1, 'a', null] } });
      expect(page.events[2]?.data?.output).to.deep.include({ previewBase64: 'NDIK', size: 3 });
    });

    it('pages in revision order with no duplicate and no skip, an event appended meanwhile on the last page', async () => {
      const written = [await h.writer.submit('ev-many')];
      for (let i = 0; i < 11; i += 1) {
        written.push(await h.writer.start('ev-many'));
        if (i % 4 === 0) await h.writer.submit(`ev-between-${i}`);
      }
      const first = await events(replica, { evalId: 'ev-many', pageSize: 5 });
      expect(first.events.map((e) => e.revision)).to.deep.equal(['1', '2', '3', '4', '5']);
      written.push(await h.writer.cancel('ev-many'));

      const rest = await allPages(replica, { evalId: 'ev-many', pageSize: 5 });
      expect(rest.pages.map((p) => p.length)).to.deep.equal([5, 5, 3]);
      expect(rest.tokens.at(-1)).to.equal('');
      const followed: EventLogEntry[] = [...first.events];
      let pageToken = first.nextPageToken;
      while (pageToken !== '') {
        const page = await events(replica, { evalId: 'ev-many', pageSize: 5, pageToken });
        followed.push(...page.events);
        pageToken = page.nextPageToken;
      }
      for (const all of [followed, rest.pages.flat()]) {
        expect(all.map((e) => e.revision)).to.deep.equal(written.map((w) => w.revision));
        expect(all.map((e) => e.position)).to.deep.equal(written.map((w) => w.position));
      }
      expect(followed.at(-1)?.eventType).to.equal(EventType.EVENT_TYPE_EVALUATION_CANCELLED);

      // A page exactly as long as what is left says so: no empty page after it.
      const exact = await events(replica, { evalId: 'ev-many', afterRevision: '8', pageSize: 5 });
      expect(exact.events.map((e) => e.revision)).to.deep.equal(['9', '10', '11', '12', '13']);
      expect(exact.nextPageToken).to.equal('');
    });

    it('starts after after_revision, and its pages keep to it', async () => {
      await h.writer.submit('ev-after');
      await h.writer.start('ev-after');
      const done = await h.writer.fail('ev-after');
      const page = await events(replica, { evalId: 'ev-after', afterRevision: '2' });
      expect(page.events.map((e) => [e.revision, e.eventType])).to.deep.equal([
        ['3', EventType.EVENT_TYPE_EVALUATION_FAILED],
      ]);
      expect(page.events[0]?.position).to.equal(done.position);
      const paged = await allPages(replica, { evalId: 'ev-after', afterRevision: '1', pageSize: 1 });
      expect(paged.pages.map((p) => p.map((e) => e.revision))).to.deep.equal([['2'], ['3']]);
      for (const afterRevision of ['3', '100']) {
        const none = await events(replica, { evalId: 'ev-after', afterRevision });
        expect(none).to.deep.equal({ events: [], nextPageToken: '' });
      }
    });

    it('cuts a page short of page_size at 1 MiB of event data, at least one event a page', async () => {
      const big = 'x'.repeat(600 * 1024);
      const written = [await h.writer.submit('ev-big')];
      for (let i = 0; i < 3; i += 1) {
        written.push(
          await h.writer.append('ev-big', {
            type: 'EvaluationStarted',
            data: { executorId: `${i}${big}`, containerId: 'c', startedAt: new Date().toISOString() },
          }),
        );
      }
      const paged = await allPages(replica, { evalId: 'ev-big', pageSize: 100 });
      // The third event starts below the budget (1 small + 1 large before it), the fourth above.
      expect(paged.pages.map((p) => p.map((e) => e.revision))).to.deep.equal([['1', '2', '3'], ['4']]);
      expect(paged.pages[1]?.[0]?.data?.executorId).to.equal(`2${big}`);
      expect(paged.pages.flat().map((e) => e.position)).to.deep.equal(written.map((w) => w.position));
    });

    it('is NOT_FOUND for an unknown evaluation, and an empty page for a known one with nothing after', async () => {
      const err = await expectError(events(replica, { evalId: 'ev-nobody' }));
      expect(err.code).to.equal(grpcStatus.NOT_FOUND);
      expect(err.details).to.equal('evaluation ev-nobody not found');
      await h.writer.submit('ev-one');
      expect(await events(replica, { evalId: 'ev-one', afterRevision: '1' })).to.deep.equal({
        events: [],
        nextPageToken: '',
      });
    });

    it('refuses a page token that is not its own, or was issued for another eval_id or after_revision', async () => {
      await h.writer.submit('ev-token');
      await h.writer.start('ev-token');
      const { nextPageToken } = await events(replica, { evalId: 'ev-token', pageSize: 1 });
      expect(nextPageToken).to.not.equal('');

      const garbage = await expectError(events(replica, { evalId: 'ev-token', pageToken: 'garbage!' }));
      expect(garbage.code).to.equal(grpcStatus.INVALID_ARGUMENT);
      expect(violationsOf(garbage)).to.deep.equal(['page_token:INVALID']);
      // A ListEvaluations token is a token too, but not one of these.
      const listToken = encodeScopedToken([], ['000000000000001:ev-token']);
      expect(
        violationsOf(await expectError(events(replica, { evalId: 'ev-token', pageToken: listToken }))),
      ).to.deep.equal(['page_token:INVALID']);
      for (const other of [{ evalId: 'ev-1' }, { evalId: 'ev-token', afterRevision: '1' }]) {
        const mismatch = await expectError(events(replica, { ...other, pageToken: nextPageToken }));
        expect(mismatch.code).to.equal(grpcStatus.INVALID_ARGUMENT);
        expect(violationsOf(mismatch)).to.deep.equal(['page_token:MISMATCH']);
      }
    });

    it('refuses a bad page_size, eval_id and after_revision, every one named', async () => {
      for (const pageSize of [1001, -1]) {
        const err = await expectError(events(replica, { evalId: 'ev-1', pageSize }));
        expect(err.code).to.equal(grpcStatus.INVALID_ARGUMENT);
        expect(violationsOf(err)).to.deep.equal(['page_size:OUT_OF_RANGE']);
      }
      const all = await expectError(events(replica, { evalId: '', afterRevision: '-1', pageSize: 5000 }));
      expect(violationsOf(all)).to.deep.equal([
        'eval_id:REQUIRED',
        'after_revision:OUT_OF_RANGE',
        'page_size:OUT_OF_RANGE',
      ]);
      expect((await events(replica, { evalId: 'ev-1', pageSize: 1000 })).events).to.have.length(3);
    });

    it('is UNAVAILABLE while PostgreSQL cannot be reached', async () => {
      const cut = await h.startReplica({
        overrides: { QUERY_DATABASE_URL: 'postgres://postgres@127.0.0.1:1/crucible' },
      });
      try {
        const err = await expectError(events(cut, { evalId: 'ev-1' }));
        expect(err.code).to.equal(grpcStatus.UNAVAILABLE);
        expect(err.details).to.equal("PostgreSQL is unavailable (reading an evaluation's events)");
      } finally {
        await cut.close();
      }
    });
  });

  describe('WaitEvaluation', () => {
    it('answers at once for an evaluation that has ended', async () => {
      await h.writer.submit('wait-done');
      const done = await h.writer.complete('wait-done', { publish: true });
      await applied(replica, done);
      const started = Date.now();
      const { evaluation, terminal } = await waitCall(replica, 'wait-done', 30_000).answer;
      expect(terminal).to.equal(true);
      expect(evaluation).to.deep.include({ evalId: 'wait-done', status: COMPLETED, revision: '2' });
      expect(evaluation?.metadata).to.deep.equal({ suite: 'query-it' });
      expect(Date.now() - started).to.be.below(10_000);
      // Without a deadline too.
      expect((await waitCall(replica, 'wait-done', undefined).answer).terminal).to.equal(true);
    });

    it('wakes up when an event ends the evaluation, through a change that does not', async () => {
      const queued = await h.writer.submit('wait-live', { publish: true });
      await applied(replica, queued);
      const hub = watchSubscriptions(replica.service.hub, 'wait-live');
      const waiting = waitCall(replica, 'wait-live', 30_000);
      await hub.subscribed;
      await applied(replica, await h.writer.start('wait-live', { publish: true }));
      const completed = await h.writer.complete('wait-live', { publish: true });
      const { evaluation, terminal } = await waiting.answer;
      expect(terminal).to.equal(true);
      expect(evaluation).to.deep.include({ status: COMPLETED, revision: '3', position: completed.position });
      await hub.unsubscribed;
      expect(replica.service.hub.listenerCount).to.equal(0);
    });

    it('answers the current state, terminal false, shortly before a deadline', async () => {
      await h.writer.submit('wait-slow');
      const started = await h.writer.start('wait-slow', { publish: true });
      await applied(replica, started);
      const deadlineMs = 1500;
      const begun = Date.now();
      const { evaluation, terminal } = await waitCall(replica, 'wait-slow', deadlineMs).answer;
      const took = Date.now() - begun;
      expect(terminal).to.equal(false);
      expect(evaluation).to.deep.include({ evalId: 'wait-slow', status: RUNNING, revision: '2' });
      // It waited (the answer is due 150 ms before the deadline), and answered in time.
      expect(took).to.be.within(1000, deadlineMs);
      expect(replica.service.hub.listenerCount).to.equal(0);
    });

    it('is NOT_FOUND for an unknown evaluation, INVALID_ARGUMENT without an id', async () => {
      const err = await expectError(waitCall(replica, 'wait-nobody', 10_000).answer);
      expect(err.code).to.equal(grpcStatus.NOT_FOUND);
      expect(err.details).to.equal('evaluation wait-nobody not found');
      const bad = await expectError(waitCall(replica, '', 10_000).answer);
      expect(bad.code).to.equal(grpcStatus.INVALID_ARGUMENT);
      expect(violationsOf(bad)).to.deep.equal(['eval_id:REQUIRED']);
    });

    it('counts as an open call while it waits (RESOURCE_EXHAUSTED past the cap), not when it answers at once', async () => {
      await h.writer.submit('wait-held');
      await h.writer.submit('wait-queued');
      await h.writer.submit('wait-ended');
      await applied(replica, await h.writer.cancel('wait-ended', { publish: true }));
      const hub = watchSubscriptions(replica.service.hub, 'wait-held');
      const held = waitCall(replica, 'wait-held', 30_000);
      await hub.subscribed;
      const refused = await expectError(waitCall(replica, 'wait-queued', 10_000).answer);
      expect(refused.code).to.equal(grpcStatus.RESOURCE_EXHAUSTED);
      expect(refused.details).to.contain('MAX_STREAMS_PER_CONNECTION').and.to.contain('WaitEvaluation');
      expect((await waitCall(replica, 'wait-ended', 10_000).answer).terminal).to.equal(true);
      await applied(replica, await h.writer.cancel('wait-held', { publish: true }));
      expect((await held.answer).terminal).to.equal(true);
    });

    it('lets go of its listener and its open call when the client cancels', async () => {
      const queued = await h.writer.submit('wait-cancel', { publish: true });
      await applied(replica, queued);
      const hub = watchSubscriptions(replica.service.hub, 'wait-cancel');
      const waiting = waitCall(replica, 'wait-cancel', 30_000);
      await hub.subscribed;
      expect(replica.service.hub.listenerCount).to.equal(1);
      waiting.cancel();
      expect((await expectError(waiting.answer)).code).to.equal(grpcStatus.CANCELLED);
      await hub.unsubscribed;
      expect(replica.service.hub.listenerCount).to.equal(0);
      // Its place on the connection (the one MAX_STREAMS_PER_CONNECTION allows) is free again.
      const again = watchSubscriptions(replica.service.hub, 'wait-cancel');
      const next = waitCall(replica, 'wait-cancel', 30_000);
      await again.subscribed;
      await applied(replica, await h.writer.start('wait-cancel', { publish: true }));
      await applied(replica, await h.writer.cancel('wait-cancel', { publish: true }));
      expect((await next.answer).evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_CANCELLED);
      await again.unsubscribed;
      expect(replica.service.hub.listenerCount).to.equal(0);
    });

    it('ends with UNAVAILABLE when the replica shuts down', async () => {
      const other = await h.startReplica();
      await other.service.projector.whenCaughtUp();
      const queued = await h.writer.submit('wait-bye', { publish: true });
      await applied(other, queued);
      const hub = watchSubscriptions(other.service.hub, 'wait-bye');
      const waiting = waitCall(other, 'wait-bye', 30_000);
      await hub.subscribed;
      const closing = other.close();
      const err = await expectError(waiting.answer);
      await closing;
      expect(err.code).to.equal(grpcStatus.UNAVAILABLE);
      expect(err.details).to.equal('server shutting down; retry (evaluation wait-bye had not ended)');
      expect(other.service.hub.listenerCount).to.equal(0);
    });
  });
});
