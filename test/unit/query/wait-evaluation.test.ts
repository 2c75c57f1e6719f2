import { ANONYMOUS_ADMIN } from '../../../shared/auth';
import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import { NotFoundError, ResourceExhaustedError, UnavailableError } from '../../../shared/errors';
import { silentLogger } from '../../../shared/logging';
import {
  Evaluation,
  EvaluationStatus,
  EvaluationUpdate,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  answerAt,
  createWaitEvaluation,
  listenForWakeUps,
  MAX_WAIT_MS,
} from '../../../services/query/handlers/wait-evaluation';
import { createChangeHub, type ChangeHub } from '../../../services/query/live/change-hub';
import { createOpenCalls, type OpenCalls } from '../../../services/query/live/open-calls';
import { createReadGuard } from '../../../services/query/live/read-guard';
import { createShutdown } from '../../../services/query/live/shutdown';
import { encodeOnce } from '../../../services/query/wire/encoded';
import type { CallContext } from '../../../shared/grpc';
import { WaitEvaluationResponse } from '../../../shared/generated/crucible/storage/v1/query_service';
import { fromBytes } from '../../../services/query/wire/encoded';
import { EvaluationQueryServiceWire } from '../../../services/query/wire/encoded-messages';

const QUEUED = EvaluationStatus.EVALUATION_STATUS_QUEUED;
const RUNNING = EvaluationStatus.EVALUATION_STATUS_RUNNING;
const COMPLETED = EvaluationStatus.EVALUATION_STATUS_COMPLETED;

describe('WaitEvaluation', () => {
  describe('answerAt: when a wait answers the current state', () => {
    const now = 1_000_000;

    it('leaves 1 s before a deadline further than 10 s away', () => {
      expect(answerAt(new Date(now + 60_000), now)).to.equal(now + 59_000);
      expect(answerAt(new Date(now + 3_600_000), now)).to.equal(now + 3_599_000);
    });

    it('leaves 10% of the time left before a nearer deadline', () => {
      expect(answerAt(new Date(now + 2_000), now)).to.equal(now + 1_800);
      expect(answerAt(new Date(now + 100), now)).to.equal(now + 90);
    });

    it('answers at once once the deadline has passed', () => {
      expect(answerAt(new Date(now - 5), now)).to.equal(now);
      expect(answerAt(new Date(now), now)).to.equal(now);
    });

    it('waits MAX_WAIT_MS (5 minutes) without a deadline', () => {
      expect(MAX_WAIT_MS).to.equal(300_000);
      expect(answerAt(undefined, now)).to.equal(now + 300_000);
      expect(answerAt(undefined, now, 25)).to.equal(now + 25);
    });
  });

  describe('listenForWakeUps', () => {
    it('says changed once per read, then the most pressing ending, which stays; close removes every listener', async () => {
      const hub = createChangeHub();
      const { shutdown, begin } = createShutdown();
      const client = new AbortController();
      const wakeUps = listenForWakeUps({ hub, shutdown }, 'e-1', client.signal, Date.now() + 60_000, Date.now);
      expect(hub.listenerCount).to.equal(1);
      publish(hub, 'e-1', 1n, RUNNING);
      publish(hub, 'e-1', 2n, RUNNING); // two changes before the read: one re-read
      expect(await wakeUps.next()).to.equal('changed');
      expect(wakeUps.takeChanged()).to.equal(true);
      expect(wakeUps.takeChanged()).to.equal(false);
      publish(hub, 'e-2', 3n, RUNNING); // another evaluation's change wakes nobody here
      const pending = wakeUps.next();
      client.abort();
      expect(await pending).to.equal('cancelled');
      begin();
      expect(await wakeUps.next()).to.equal('shutdown');
      publish(hub, 'e-1', 4n, RUNNING);
      expect(await wakeUps.next()).to.equal('shutdown');
      wakeUps.close();
      wakeUps.close();
      expect(hub.listenerCount).to.equal(0);
    });

    it('is due at `at`, before a change, and starts ended on a cancelled call or a server shutting down', async () => {
      const hub = createChangeHub();
      const due = listenForWakeUps({ hub, shutdown: createShutdown().shutdown }, 'e', live(), Date.now(), Date.now);
      expect(await due.next()).to.equal('due');
      publish(hub, 'e', 1n, RUNNING);
      expect(await due.next()).to.equal('due');
      expect(due.takeChanged()).to.equal(true);
      due.close();

      const gone = new AbortController();
      gone.abort();
      const cancelled = listenForWakeUps({ hub, shutdown: createShutdown().shutdown }, 'e', gone.signal, 0, Date.now);
      expect(await cancelled.next()).to.equal('cancelled');
      cancelled.close();
      const stopping = createShutdown();
      stopping.begin();
      const down = listenForWakeUps({ hub, shutdown: stopping.shutdown }, 'e', live(), Date.now() + 60_000, Date.now);
      expect(await down.next()).to.equal('shutdown');
      down.close();
      expect(hub.listenerCount).to.equal(0);
    });
  });

  describe('on the wire (EvaluationQueryServiceWire)', () => {
    it("writes the record's bytes as they are and `terminal`, byte for byte as ts-proto", () => {
      const evaluation = Evaluation.fromPartial({
        evalId: 'e-1',
        status: RUNNING,
        revision: '7',
        metadata: { suite: 's', list: [1, 'a', null, true], nested: { deep: 'x' } },
        createdAt: new Date(Date.UTC(2026, 0, 1, 0, 0, 0, 123)),
      });
      const record = fromBytes(Evaluation, Evaluation.encode(evaluation).finish());
      for (const terminal of [true, false]) {
        const wire = EvaluationQueryServiceWire.waitEvaluation.responseSerialize({ evaluation: record, terminal });
        const expected = WaitEvaluationResponse.encode({ evaluation, terminal }).finish();
        expect(wire.toString('hex'), String(terminal)).to.equal(Buffer.from(expected).toString('hex'));
        expect(WaitEvaluationResponse.decode(wire)).to.deep.equal({ evaluation, terminal });
      }
    });
  });

  describe('the handler', () => {
    it('answers an ended evaluation at once, holding no open call (refused past the cap when it must wait)', async () => {
      const replica = fakeReplica({ status: COMPLETED, maxOpen: 0 });
      const answer = await replica.wait({});
      expect(answer.terminal).to.equal(true);
      expect(answer.evaluation.message).to.deep.include({ evalId: 'e-1', status: COMPLETED });
      expect(replica.reads).to.equal(1);

      replica.state.status = RUNNING;
      const refused = await replica.wait({}).catch((err: unknown) => err);
      expect(refused).to.be.instanceOf(ResourceExhaustedError);
      expect(replica.hub.listenerCount).to.equal(0);
    });

    it('waits for a change that ends the evaluation, counted as an open call, and answers it', async () => {
      const replica = fakeReplica({ status: QUEUED });
      const answer = replica.wait({ deadlineMs: 30_000 });
      await replica.nextRead(2); // subscribed, and read again
      expect(replica.hub.listenerCount).to.equal(1);
      expect(replica.openCalls.count).to.equal(1);

      replica.change(RUNNING); // not the end: read again, wait on
      await replica.nextRead(3);
      replica.change(COMPLETED);
      const { evaluation, terminal } = await answer;
      expect(terminal).to.equal(true);
      expect(evaluation.message).to.deep.include({ status: COMPLETED, revision: '3' });
      expect(replica.reads).to.equal(4);
      expect(replica.hub.listenerCount).to.equal(0);
      expect(replica.openCalls.count).to.equal(0);
    });

    it('answers the current state, as changed meanwhile, before the deadline', async () => {
      const replica = fakeReplica({ status: QUEUED });
      const deadline = Date.now() + 300;
      const answer = replica.wait({ deadline: new Date(deadline) });
      await replica.nextRead(2);
      replica.change(RUNNING);
      const { evaluation, terminal } = await answer;
      expect(Date.now()).to.be.below(deadline);
      expect(terminal).to.equal(false);
      expect(evaluation.message).to.deep.include({ status: RUNNING, revision: '2' });
      expect(replica.hub.listenerCount).to.equal(0);
      expect(replica.openCalls.count).to.equal(0);
    });

    it('answers the current state after maxWaitMs without a deadline', async () => {
      const replica = fakeReplica({ status: RUNNING, maxWaitMs: 20 });
      const { evaluation, terminal } = await replica.wait({});
      expect(terminal).to.equal(false);
      expect(evaluation.message.status).to.equal(RUNNING);
      expect(replica.openCalls.count).to.equal(0);
    });

    it('lets go of everything when the client cancels', async () => {
      const replica = fakeReplica({ status: RUNNING });
      const client = new AbortController();
      const answer = replica.wait({ signal: client.signal });
      await replica.nextRead(2);
      client.abort();
      await answer;
      expect(replica.hub.listenerCount).to.equal(0);
      expect(replica.openCalls.count).to.equal(0);
    });

    it('ends with UNAVAILABLE when the server shuts down', async () => {
      const replica = fakeReplica({ status: RUNNING });
      const answer = replica.wait({}).catch((err: unknown) => err);
      await replica.nextRead(2);
      replica.stop();
      const err = await answer;
      expect(err).to.be.instanceOf(UnavailableError);
      expect((err as Error).message).to.equal('server shutting down; retry (evaluation e-1 had not ended)');
      expect(replica.hub.listenerCount).to.equal(0);
      expect(replica.openCalls.count).to.equal(0);
    });

    it('is NOT_FOUND for an evaluation the log does not have either', async () => {
      const replica = fakeReplica({ status: undefined });
      expect(await replica.wait({}).catch((err: unknown) => err)).to.be.instanceOf(NotFoundError);
      expect(replica.openCalls.count).to.equal(0);
    });
  });
});

function live(): AbortSignal {
  return new AbortController().signal;
}

function publish(hub: ChangeHub, evalId: string, position: bigint, status: EvaluationStatus): void {
  const update = encodeOnce(EvaluationUpdate, EvaluationUpdate.fromPartial({}));
  hub.publish({ position, revision: position, evalId, status, tenant: 'default', update });
}

/**
 * The handler over an in-memory record of 'e-1' (`status` undefined: none) and a real hub,
 * open-call counter and shutdown; `change()` moves the record and announces it as the tail would.
 */
function fakeReplica(options: { status: EvaluationStatus | undefined; maxOpen?: number; maxWaitMs?: number }) {
  const hub = createChangeHub();
  const { shutdown, begin } = createShutdown();
  const openCalls: OpenCalls = createOpenCalls({
    maxOpen: options.maxOpen ?? 10,
    maxOpenPerConnection: options.maxOpen ?? 10,
  });
  const state = { status: options.status, revision: 1n, position: 1n };
  let reads = 0;
  const readWaiters: { n: number; resolve: () => void }[] = [];
  const guard = createReadGuard({
    projection: {
      status: () => ({ checkpoint: 0n, stalled: undefined }),
      requestCatchUp: () => undefined,
      repair: () => undefined,
    },
    firstPositionOf: () => Promise.resolve(undefined),
    checkIndexes: () => undefined,
    logger: silentLogger,
  });
  const waitEvaluation = createWaitEvaluation({
    retired: {
      evaluation: () => Promise.resolve('held'),
      eventsOf: () => Promise.resolve([]),
    },
    records: {
      get: () => {
        reads += 1;
        for (const waiter of readWaiters.filter((w) => w.n <= reads)) waiter.resolve();
        const record =
          state.status === undefined
            ? undefined
            : encodeOnce(
                Evaluation,
                Evaluation.fromPartial({ evalId: 'e-1', status: state.status, revision: String(state.revision) }),
              );
        return Promise.resolve({ record, checkpoint: state.position });
      },
      getMany: () => Promise.resolve([]),
    },
    guard,
    openCalls,
    hub,
    readiness: { ready: () => Promise.resolve() },
    shutdown,
    ...(options.maxWaitMs !== undefined ? { maxWaitMs: options.maxWaitMs } : {}),
  });
  return {
    hub,
    openCalls,
    state,
    get reads() {
      return reads;
    },
    /** Resolves once the record has been read `n` times in all. */
    nextRead(n: number): Promise<void> {
      if (reads >= n) return Promise.resolve();
      return new Promise((resolve) => readWaiters.push({ n, resolve }));
    },
    change(status: EvaluationStatus) {
      state.status = status;
      state.revision += 1n;
      state.position += 1n;
      publish(hub, 'e-1', state.position, status);
    },
    stop: begin,
    wait(call: { deadline?: Date; deadlineMs?: number; signal?: AbortSignal }) {
      const deadline =
        call.deadline ?? (call.deadlineMs !== undefined ? new Date(Date.now() + call.deadlineMs) : undefined);
      const context: CallContext = {
        caller: ANONYMOUS_ADMIN,
        signal: call.signal ?? live(),
        deadline,
        metadata: new Metadata(),
        peer: 'p',
      };
      return waitEvaluation({ evalId: 'e-1' }, context);
    },
  };
}
