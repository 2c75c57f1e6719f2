import { createHash } from 'node:crypto';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { loadConfig, type Limits } from '../../../shared/config';
import {
  AlreadyExistsError,
  CommitOutcomeUnknownError,
  IllegalTransitionError,
  NotFoundError,
  PermissionDeniedError,
  RevisionConflictError,
  UnavailableError,
} from '../../../shared/errors';
import type { Caller } from '../../../shared/auth';
import { createCallLog, toStatus } from '../../../shared/grpc';
import { silentLogger } from '../../../shared/logging';
import { createCommandExecutor, type CommandExecutor } from '../../../services/command/application/command-executor';
import { createRecentStates } from '../../../services/command/application/recent-states';
import { MAX_ROUNDS } from '../../../services/command/application/decide-and-append';
import type {
  CancelEvaluation,
  CompleteEvaluation,
  CompletionHeader,
  FailEvaluation,
  StartEvaluation,
  SubmitEvaluation,
} from '../../../services/command/domain';
import {
  createInMemoryBlobStore,
  createInMemoryEvaluationStore,
  createInMemoryEventPublisher,
  deferred,
  recordingLogger,
  sequentialIds,
  steppingClock,
  type Journal,
} from './in-memory-ports';

const LIMITS: Limits = { ...loadConfig({ ENVIRONMENT: 'test' }).limits, previewBytes: 8, inlineOutputMaxBytes: 64 };
const LARGE = Buffer.alloc(200, 'x');

const SUBMIT: SubmitEvaluation = {
  type: 'SubmitEvaluation',
  evalId: 'e1',
  code: 'print("hello")',
  language: 'python',
  engine: 'docker',
  timeoutSeconds: 30,
  metadata: {},
};
const START: StartEvaluation = { type: 'StartEvaluation', evalId: 'e1', executorId: 'x1', containerId: 'c1' };
const CANCEL: CancelEvaluation = { type: 'CancelEvaluation', evalId: 'e1', reason: 'user' };
const complete = (output: Buffer): CompleteEvaluation => ({
  type: 'CompleteEvaluation',
  evalId: 'e1',
  output,
  exitCode: 0,
});
const FAIL: FailEvaluation = { type: 'FailEvaluation', evalId: 'e1', error: 'boom', exitCode: 1, reason: 'timeout' };

/**
 * The executor over in-memory ports, the store's positions starting at 41. `recentStates`: how
 * many states it keeps as first guesses (0: every command loads first, as the journals below
 * expect unless they say otherwise).
 */
function world({ maxPending = 100, maxQueued = 0, recentStates = 0 } = {}) {
  const journal: Journal = [];
  const store = createInMemoryEvaluationStore(journal, 41n);
  const blobs = createInMemoryBlobStore(journal);
  const publisher = createInMemoryEventPublisher(journal);
  const newId = sequentialIds();
  const logger = recordingLogger();
  const deps = {
    store,
    blobs,
    publisher,
    clock: steppingClock(),
    newId,
    limits: LIMITS,
    admission: { maxInProgress: maxPending, maxQueued },
    logger,
  };
  const kept = createRecentStates(recentStates);
  const executor = createCommandExecutor({ ...deps, recentStates: kept });
  return {
    journal,
    store,
    blobs,
    publisher,
    newId,
    logger,
    executor,
    recentStates: kept,
    /** Another executor on the same ports: a concurrent writer. */
    other: (): CommandExecutor =>
      createCommandExecutor({ ...deps, newId: sequentialIds(), recentStates: createRecentStates(recentStates) }),
    /** Forgets the journal so far (the set-up's side effects). */
    mark: (): void => void journal.splice(0),
  };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  return expect.fail('expected a rejection');
}

const codeOf = (err: unknown): GrpcStatus => toStatus(err, createCallLog(silentLogger), 'test').code;

/** `content` in chunks of `size`, arriving asynchronously as from a socket. */
async function* chunksOf(content: Buffer, size = 50): AsyncGenerator<Buffer> {
  for (let at = 0; at < content.length; at += size) {
    await Promise.resolve();
    yield content.subarray(at, at + size);
  }
}

const header = (outputSize: number, options: CompletionHeader['options'] = {}): CompletionHeader => ({
  evalId: 'e1',
  exitCode: 0,
  outputSize,
  options,
});

describe('command executor', () => {
  describe('a command that is appended', () => {
    it('appends a submit of a new id without loading first, then publishes its event, and answers with the position the store returned', async () => {
      const w = world();
      const result = await w.executor.execute(SUBMIT);

      expect(result).to.deep.equal({ evalId: 'e1', revision: '1', position: '41' });
      expect(w.journal).to.deep.equal(['store.append e1@1', 'publish 41']);
      expect(w.publisher.published).to.deep.equal(w.store.events);
      expect(w.store.events[0]).to.include({ position: '41', evalId: 'e1', revision: '1' });
      expect(w.store.events[0]?.event.type).to.equal('EvaluationQueued');
      expect(w.store.appended[0]?.body).to.deep.equal({
        kind: 'code',
        size: Buffer.byteLength(SUBMIT.code),
        content: Buffer.from(SUBMIT.code, 'utf8'),
      });
    });

    it('answers a change with the next revision at the next position', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      expect(await w.executor.execute(START)).to.deep.equal({ evalId: 'e1', revision: '2', position: '42' });
      expect(w.publisher.published.map((e) => e.event.type)).to.deep.equal(['EvaluationQueued', 'EvaluationStarted']);
    });

    it('gives a submit without an eval_id one fresh id, kept across conflict rounds', async () => {
      const w = world();
      const { evalId: _evalId, ...anonymous } = SUBMIT;
      w.store.forcedConflicts = 1;
      const result = await w.executor.execute(anonymous);

      expect(result).to.deep.equal({ evalId: 'id-1', revision: '1', position: '41' });
      expect(w.newId.issued).to.deep.equal(['id-1']);
      expect(w.journal).to.deep.equal([
        'store.conflict id-1@1',
        'store.load id-1',
        'store.append id-1@1',
        'publish 41',
      ]);
    });
  });

  describe("a submit's first guess (nothing there)", () => {
    it('is decided again against a load when it is refused: an id taken with other content is ALREADY_EXISTS, not a revision conflict', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      w.mark();
      const err = await rejection(w.executor.execute({ ...SUBMIT, code: 'print("other")', expectedRevision: '3' }));

      expect(err).to.be.instanceOf(AlreadyExistsError);
      // The guess refused itself (expected revision 3 of nothing) before writing: no conflict, one load.
      expect(w.journal).to.deep.equal(['store.load e1']);
      expect(w.store.events).to.have.length(1);
    });

    it('conflicts when the id is taken, and the load then answers a retry of the same submit as the first time', async () => {
      const w = world();
      const first = await w.executor.execute(SUBMIT);
      w.mark();
      expect(await w.executor.execute(SUBMIT)).to.deep.equal(first);
      expect(w.journal).to.deep.equal(['store.conflict e1@1', 'store.load e1']);
      expect(w.store.events).to.have.length(1);
    });

    it('is not made for code kept in S3: that submit loads first, before uploading anything', async () => {
      const w = world();
      const code = 'x'.repeat(LIMITS.inlineCodeMaxBytes + 1);
      await w.executor.execute({ ...SUBMIT, code });
      expect(w.journal[0]).to.equal('store.load e1');
    });
  });

  describe('a repeated command', () => {
    it('answers a repeated request_id as the first time and writes and publishes nothing', async () => {
      const w = world();
      const first = await w.executor.execute({ ...SUBMIT, requestId: 'r1' });
      w.mark();
      const again = await w.executor.execute({ ...SUBMIT, requestId: 'r1' });

      expect(again).to.deep.equal(first);
      // The submit's guess (nothing there) conflicts, writing nothing; the load then finds the request.
      expect(w.journal).to.deep.equal(['store.conflict e1@1', 'store.load e1']);
      expect(w.store.events).to.have.length(1);
      expect(w.publisher.published).to.have.length(1);
    });

    it('answers a repeat of the latest change (same content, no request_id) as the first time', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      const first = await w.executor.execute(START);
      w.mark();
      const again = await w.executor.execute(START);

      expect(again).to.deep.equal(first);
      expect(w.journal).to.deep.equal(['store.load e1']);
      expect(w.publisher.published).to.have.length(2);
    });

    it('refuses a request_id reused for another command with ALREADY_EXISTS, writing nothing', async () => {
      const w = world();
      await w.executor.execute({ ...SUBMIT, requestId: 'r1' });
      w.mark();
      const err = await rejection(w.executor.execute({ ...START, requestId: 'r1' }));

      expect(err).to.be.instanceOf(AlreadyExistsError);
      expect(w.journal).to.deep.equal(['store.load e1']);
    });
  });

  describe('a conflict', () => {
    it('decides again against the fresh state, with a fresh clock reading', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      // While the cancel is on its way to the store, another executor starts the evaluation.
      w.store.beforeAppend = async () => {
        w.store.beforeAppend = () => undefined;
        await w.other().execute(START);
      };
      const result = await w.executor.execute(CANCEL);

      expect(result).to.deep.equal({ evalId: 'e1', revision: '3', position: '43' });
      const [, started, cancelled] = w.store.events;
      expect(started?.event.type).to.equal('EvaluationStarted');
      expect(cancelled?.event.type).to.equal('EvaluationCancelled');
      expect(Date.parse(cancelled?.recordedAt ?? '')).to.be.greaterThan(Date.parse(started?.recordedAt ?? ''));
      expect(w.publisher.published.map((e) => e.position)).to.deep.equal(['41', '42', '43']);
    });

    it('is a RevisionConflictError (ABORTED) when a concurrent writer made the expected_revision stale', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      w.store.beforeAppend = async () => {
        w.store.beforeAppend = () => undefined;
        await w.other().execute(CANCEL);
      };
      w.mark();
      const err = await rejection(w.executor.execute({ ...START, expectedRevision: '1' }));

      expect(err).to.be.instanceOf(RevisionConflictError);
      expect(err).to.include({ expected: '1', current: '2' });
      expect(codeOf(err)).to.equal(GrpcStatus.ABORTED);
      // The concurrent cancel is the only write, and the only publish.
      expect(w.journal.filter((e) => !e.startsWith('store.load'))).to.deep.equal([
        'store.append e1@2',
        'publish 42',
        'store.conflict e1@2',
      ]);
    });

    it('answers as the winner did when the same command won the race', async () => {
      const w = world();
      w.store.beforeAppend = async () => {
        w.store.beforeAppend = () => undefined;
        await w.other().execute({ ...SUBMIT, requestId: 'r1' });
      };
      const result = await w.executor.execute({ ...SUBMIT, requestId: 'r1' });

      expect(result).to.deep.equal({ evalId: 'e1', revision: '1', position: '41' });
      expect(w.store.events).to.have.length(1);
      expect(w.publisher.published).to.have.length(1);
    });

    it('decides a change on an evaluation it wrote lately without a load, when it keeps recent states', async () => {
      const w = world({ recentStates: 10 });
      await w.executor.execute(SUBMIT);
      await w.executor.execute(START);
      expect(w.journal).to.deep.equal(['store.append e1@1', 'publish 41', 'store.append e1@2', 'publish 42']);
      expect(w.recentStates.counts).to.deep.equal({ hits: 1, misses: 0, reloaded: 0 });
    });

    it('loads and decides again when another instance moved the evaluation its recent state shows', async () => {
      const w = world({ recentStates: 10 });
      await w.executor.execute(SUBMIT);
      await w.other().execute(CANCEL);
      w.mark();
      const err = await rejection(w.executor.execute(START));

      // Decided against its own revision 1 (a start), the write conflicted; the load showed the cancel.
      expect(err).to.be.instanceOf(IllegalTransitionError);
      expect(w.journal).to.deep.equal(['store.conflict e1@2', 'store.load e1']);
      expect(w.store.events).to.have.length(2);
      expect(w.recentStates.counts).to.deep.equal({ hits: 1, misses: 0, reloaded: 1 });
    });

    it('loads before answering a repeat or a refusal that only its recent state shows', async () => {
      const w = world({ recentStates: 10 });
      await w.executor.execute(SUBMIT);
      const started = await w.executor.execute({ ...START, requestId: 'r-start' });
      w.mark();
      // Its recent state shows this very start as the latest command: a repeat, which only a load
      // (finding the request id) may confirm.
      expect(await w.executor.execute({ ...START, requestId: 'r-start' })).to.deep.equal(started);
      expect(w.journal).to.deep.equal(['store.load e1']);
      expect(w.recentStates.counts.reloaded, 'a repeat by the guess is confirmed by a load').to.equal(1);
    });

    it(`gives up after ${MAX_ROUNDS} conflicting rounds, having written and published nothing more`, async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      w.store.forcedConflicts = Infinity;
      w.journal.length = 0;
      const err = await rejection(w.executor.execute(START));

      // Nothing was written: UNAVAILABLE (retry), not INTERNAL.
      expect(err).to.be.instanceOf(UnavailableError);
      expect((err as Error).message).to.equal(
        `gave up on StartEvaluation for e1 after ${MAX_ROUNDS} conflicting rounds; retry with backoff`,
      );
      expect(w.journal.filter((e) => e === 'store.conflict e1@2')).to.have.length(MAX_ROUNDS);
      expect(w.journal.filter((e) => e === 'store.load e1')).to.have.length(MAX_ROUNDS);
      expect(w.store.events).to.have.length(1);
      expect(w.publisher.published).to.have.length(1);
    });

    it("refuses a submit whose every write collides with what no load sees (another tenant's id) as ALREADY_EXISTS", async () => {
      const w = world();
      w.store.forcedConflicts = Infinity;
      const err = await rejection(w.executor.execute(SUBMIT));

      expect(err).to.be.instanceOf(AlreadyExistsError);
      expect((err as Error).message).to.equal('evaluation e1 already exists; choose another eval_id');
      expect(w.journal.filter((e) => e === 'store.conflict e1@1')).to.have.length(MAX_ROUNDS);
      expect(w.store.events).to.deep.equal([]);
      expect(w.publisher.published).to.deep.equal([]);
    });
  });

  describe('a body', () => {
    const key = `evaluations/e1/output/${createHash('sha256').update(LARGE).digest('hex')}`;

    it('keeps a small output in the store and uploads nothing', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      await w.executor.execute(complete(Buffer.from('small')));

      expect(w.store.bodies.filter((b) => b.kind !== 'code')).to.deep.equal([
        { kind: 'output', size: 5, content: Buffer.from('small') },
      ]);
      expect(w.blobs.objects.size).to.equal(0);
    });

    it('uploads a large output to the blob store before the append, under its content key', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      w.mark();
      const result = await w.executor.execute(complete(LARGE));

      expect(result).to.deep.equal({ evalId: 'e1', revision: '2', position: '42' });
      expect(w.journal).to.deep.equal(['store.load e1', `blobs.put ${key}`, 'store.append e1@2', 'publish 42']);
      expect(w.blobs.objects.get(key)?.equals(LARGE)).to.equal(true);
      expect(w.store.bodies.filter((b) => b.kind !== 'code')).to.deep.equal([
        { kind: 'output', size: LARGE.length, s3Key: key, home: 's3' },
      ]);
      const completed = w.store.events[1]?.event;
      if (completed?.type !== 'EvaluationCompleted') return expect.fail('expected EvaluationCompleted');
      expect(completed.data.output).to.include({ location: 's3', s3Key: key, size: LARGE.length });
    });

    it('keeps a large error under the error kind', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      const error = 'e'.repeat(100);
      await w.executor.execute({ ...FAIL, error });

      const errorKey = `evaluations/e1/error/${createHash('sha256').update(error).digest('hex')}`;
      expect([...w.blobs.objects.keys()]).to.deep.equal([errorKey]);
      expect(w.store.bodies.filter((b) => b.kind !== 'code')).to.deep.equal([
        { kind: 'error', size: 100, s3Key: errorKey, home: 's3' },
      ]);
    });

    it('uploads once, whatever the number of conflict rounds', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      w.store.forcedConflicts = 2;
      w.mark();
      await w.executor.execute(complete(LARGE));

      expect(w.journal.filter((e) => e.startsWith('blobs.put'))).to.have.length(1);
      expect(w.journal.indexOf(`blobs.put ${key}`)).to.be.lessThan(w.journal.indexOf('store.conflict e1@2'));
    });

    it('writes nothing to the store and publishes nothing when the blob put fails', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      const failure = new UnavailableError('object storage is unavailable; retry');
      w.blobs.beforePut = () => {
        throw failure;
      };
      w.mark();
      const err = await rejection(w.executor.execute(complete(LARGE)));

      expect(err).to.equal(failure);
      expect(w.journal).to.deep.equal(['store.load e1']);
      expect(w.store.events).to.have.length(1);
      expect(w.publisher.published).to.have.length(1);
    });
  });

  describe('an unavailable store', () => {
    const down = new UnavailableError('PostgreSQL is unavailable (test); retry');

    it('surfaces UnavailableError from a load, writing and publishing nothing', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      w.mark();
      w.store.beforeLoad = () => {
        throw down;
      };
      const err = await rejection(w.executor.execute(START));

      expect(err).to.equal(down);
      expect(codeOf(err)).to.equal(GrpcStatus.UNAVAILABLE);
      expect(w.store.events).to.have.length(1);
      expect(w.journal).to.deep.equal(['store.load e1']);
    });

    it('surfaces UnavailableError from an append, publishing nothing and not retrying', async () => {
      const w = world();
      w.store.beforeAppend = () => {
        throw down;
      };
      const err = await rejection(w.executor.execute(SUBMIT));

      expect(err).to.equal(down);
      expect(w.journal).to.deep.equal([]);
      expect(w.publisher.published).to.deep.equal([]);
    });
  });

  describe('a write whose outcome is unknown', () => {
    const lost = (): CommitOutcomeUnknownError =>
      new CommitOutcomeUnknownError('the connection to PostgreSQL failed after the write was sent (test)');

    /** The next append loses its answer: after writing (`committed`) or before. */
    function loseNextAnswer(w: ReturnType<typeof world>, { committed }: { committed: boolean }): void {
      const append = w.store.append.bind(w.store);
      w.store.append = async (request) => {
        w.store.append = append;
        if (committed) await append(request);
        throw lost();
      };
    }

    const { evalId: _evalId, ...ANONYMOUS } = SUBMIT;

    it('reads it back and answers as committed when it was, writing nothing more', async () => {
      const w = world();
      loseNextAnswer(w, { committed: true });
      const warned = w.logger.next('warn');
      const result = await w.executor.execute(ANONYMOUS);

      expect(result).to.deep.equal({ evalId: 'id-1', revision: '1', position: '41' });
      expect(w.journal).to.deep.equal(['store.append id-1@1', 'store.load id-1']);
      expect(w.store.events).to.have.length(1);
      expect((await warned).msg).to.equal('write outcome unknown; reading it back');
    });

    it('reads it back and writes again, under the same id, when it had not committed', async () => {
      const w = world();
      loseNextAnswer(w, { committed: false });
      const result = await w.executor.execute(ANONYMOUS);

      expect(result).to.deep.equal({ evalId: 'id-1', revision: '1', position: '41' });
      expect(w.newId.issued).to.deep.equal(['id-1']);
      expect(w.journal).to.deep.equal(['store.load id-1', 'store.append id-1@1', 'publish 41']);
    });

    it('says the outcome is unknown when the read-back fails: for a submit without ids, the id it would have and the risk of a duplicate', async () => {
      const w = world();
      loseNextAnswer(w, { committed: true });
      let loads = 0;
      w.store.beforeLoad = () => {
        // The first load is the read-back: a new submit does not load before its write.
        if (++loads === 1) throw new UnavailableError('PostgreSQL is unavailable (load): test; retry');
      };
      const err = await rejection(w.executor.execute(ANONYMOUS));

      expect(err).to.be.instanceOf(CommitOutcomeUnknownError);
      expect(codeOf(err)).to.equal(GrpcStatus.UNAVAILABLE);
      const message = (err as Error).message;
      expect(message).to.include('SubmitEvaluation of evaluation id-1: the outcome is unknown');
      expect(message).to.include('its eval_id is "id-1"');
      expect(message).to.include('a retry without request_id or eval_id may create a duplicate evaluation');
      expect(message).to.not.include('nothing was written');
    });

    it('names the retry that learns the outcome: the same request_id, or the same command', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      for (const [command, retry] of [
        [{ ...SUBMIT, evalId: 'e2', requestId: 'r1' }, 'a retry with the same request_id is safe'],
        [{ ...SUBMIT, evalId: 'e3' }, 'a retry of the same command (same eval_id) is safe'],
        [START, 'a retry of the same command (same eval_id) is safe'],
      ] as const) {
        loseNextAnswer(w, { committed: false });
        w.store.beforeAppend = () => {
          w.store.beforeAppend = () => undefined;
          throw new UnavailableError('PostgreSQL refused the write: test; nothing was written; retry');
        };
        const err = await rejection(w.executor.execute(command));
        expect(err, command.type).to.be.instanceOf(CommitOutcomeUnknownError);
        // The second failure said "nothing was written" of itself; the first write is still unknown.
        expect((err as Error).message, command.type)
          .to.include('the outcome is unknown')
          .and.include(retry);
      }
    });

    it('reads back once: a second unknown outcome is reported', async () => {
      const w = world();
      w.store.append = () => Promise.reject(lost());
      const err = await rejection(w.executor.execute(SUBMIT));

      expect(err).to.be.instanceOf(CommitOutcomeUnknownError);
      expect(w.journal).to.deep.equal(['store.load e1']);
    });

    it('keeps a streamed upload when the write read back turns out committed: its row refers to it', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      loseNextAnswer(w, { committed: true });
      const result = await w.executor.completeStreamed(header(LARGE.length), chunksOf(LARGE));

      expect(result).to.deep.equal({ evalId: 'e1', revision: '2', position: '42' });
      expect(w.store.bodies.filter((b) => b.kind !== 'code')).to.deep.equal([
        { kind: 'output', size: LARGE.length, s3Key: 'evaluations/e1/output/streamed-id-1', home: 's3' },
      ]);
      expect([...w.blobs.objects.keys()]).to.deep.equal(['evaluations/e1/output/streamed-id-1']);
    });
  });

  describe('the executor binding', () => {
    const as = (subject: string): Caller => ({ subject, tenant: 't', roles: new Set(['executor']) });

    it("takes in none of another executor's streamed output: refused before its first byte is read", async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      await w.executor.execute(START, { caller: as('x1') });
      w.mark();
      let pulled = 0;
      async function* counted(): AsyncGenerator<Buffer> {
        for await (const chunk of chunksOf(LARGE)) {
          pulled += 1;
          yield chunk;
        }
      }
      const err = await rejection(w.executor.completeStreamed(header(LARGE.length), counted(), { caller: as('x2') }));
      expect(err).to.be.instanceOf(PermissionDeniedError);
      expect(pulled).to.equal(0);
      expect(w.journal, 'one read of the binding; nothing uploaded, written or published').to.deep.equal([
        'store.load e1',
      ]);
      expect(w.blobs.objects.size).to.equal(0);
      // Its own executor's goes through, and the event names who reported it.
      await w.executor.completeStreamed(header(LARGE.length), chunksOf(LARGE), { caller: as('x1') });
      expect(w.store.appended.map((r) => r.reporter)).to.deep.equal(['crucible-storage', 'x1', 'x1']);
    });
  });

  describe("the call's deadline", () => {
    it('goes with the write, which must not commit after it', async () => {
      const w = world();
      const deadline = new Date(Date.now() + 5000);
      await w.executor.execute(SUBMIT, { deadline });
      await w.executor.completeStreamed(header(LARGE.length), chunksOf(LARGE), { deadline });
      await w.executor.execute({ ...SUBMIT, evalId: 'e2' });

      expect(w.store.appended.map((r) => r.deadline)).to.deep.equal([deadline, deadline, undefined]);
    });
  });

  describe('the publish', () => {
    it('does not fail the command when it fails after the commit: the event stays committed, a warning is logged', async () => {
      const w = world();
      w.publisher.respond = () => Promise.reject(new Error('redis is down'));
      const warned = w.logger.next('warn');
      const result = await w.executor.execute(SUBMIT);

      expect(result).to.deep.equal({ evalId: 'e1', revision: '1', position: '41' });
      expect(w.store.events).to.have.length(1);
      const warning = await warned;
      expect(warning.msg).to.equal('publish failed; the query side will catch up from the event log');
      expect(warning.fields).to.include({ position: '41' });
    });

    it('is not waited for: the answer comes while the publish is still pending', async () => {
      const w = world();
      const publish = deferred();
      w.publisher.respond = () => publish.promise;
      // Were the answer to wait for the publish, this would never resolve (the test times out).
      const result = await w.executor.execute(SUBMIT);

      expect(result.position).to.equal('41');
      expect(w.publisher.published).to.have.length(1);
      publish.resolve();
    });
  });

  describe('the pending-commands limit', () => {
    /** Holds every load until `release` (a command in progress waiting for PostgreSQL). */
    function holdLoads(w: ReturnType<typeof world>) {
      const gate = deferred();
      w.store.beforeLoad = () => gate.promise;
      return () => {
        w.store.beforeLoad = () => undefined;
        gate.resolve();
      };
    }

    it('refuses a command beyond maxPending at once with UNAVAILABLE "overloaded", before any load', async () => {
      const w = world({ maxPending: 2 });
      await w.executor.execute(SUBMIT);
      w.mark();
      const release = holdLoads(w);
      const first = w.executor.execute(START);
      const second = w.executor.execute(FAIL);
      const err = await rejection(w.executor.execute(CANCEL));

      expect(err).to.be.instanceOf(UnavailableError);
      expect((err as Error).message).to.match(/overloaded: 2 commands in progress/);
      expect(codeOf(err)).to.equal(GrpcStatus.UNAVAILABLE);
      expect(w.journal).to.deep.equal(['store.load e1', 'store.load e1']);
      release();
      await Promise.all([first, second]);
    });

    it('frees its slot after a command succeeds', async () => {
      const w = world({ maxPending: 1 });
      const release = holdLoads(w);
      const first = w.executor.execute(SUBMIT);
      expect(await rejection(w.executor.execute(START))).to.be.instanceOf(UnavailableError);
      release();
      await first;

      expect(await w.executor.execute(START)).to.include({ revision: '2' });
    });

    it('frees its slot after a command fails', async () => {
      const w = world({ maxPending: 1 });
      const release = holdLoads(w);
      const failing = w.executor.execute(START); // no such evaluation
      expect(await rejection(w.executor.execute(SUBMIT))).to.be.instanceOf(UnavailableError);
      release();
      expect(await rejection(failing)).to.be.instanceOf(NotFoundError);

      expect(await w.executor.execute(SUBMIT)).to.include({ revision: '1' });
    });

    it('does not count a streamed completion while its bytes arrive', async () => {
      const w = world({ maxPending: 1 });
      await w.executor.execute(SUBMIT);
      const more = deferred();
      async function* slowly(): AsyncGenerator<Buffer> {
        yield LARGE.subarray(0, 100);
        await more.promise;
        yield LARGE.subarray(100);
      }
      const streamed = w.executor.completeStreamed(header(LARGE.length), slowly());

      expect(await w.executor.execute(START)).to.include({ revision: '2' });
      more.resolve();
      expect(await streamed).to.include({ revision: '3' });
    });

    it('deletes a streamed upload before refusing its command for overload', async () => {
      const w = world({ maxPending: 1 });
      await w.executor.execute(SUBMIT);
      const reading = deferred();
      const more = deferred();
      async function* slowly(): AsyncGenerator<Buffer> {
        reading.resolve(); // past the existence check: its load is answered
        yield LARGE.subarray(0, 100);
        await more.promise;
        yield LARGE.subarray(100);
      }
      const streamed = w.executor.completeStreamed(header(LARGE.length), slowly());
      await reading.promise;
      const release = holdLoads(w);
      const held = w.executor.execute(START); // takes the one slot while the bytes arrive
      more.resolve();
      const err = await rejection(streamed);

      expect(err).to.be.instanceOf(UnavailableError);
      expect(w.blobs.objects.size).to.equal(0);
      expect(w.journal.filter((e) => e.startsWith('blobs.'))).to.have.length(2);
      release();
      await held;
    });
  });

  describe('a streamed completion', () => {
    it('collects an output up to the inline limit and keeps it in the store', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      const output = Buffer.from('streamed but small');
      const result = await w.executor.completeStreamed(header(output.length), chunksOf(output, 4));

      expect(result).to.deep.equal({ evalId: 'e1', revision: '2', position: '42' });
      expect(w.store.bodies.filter((b) => b.kind !== 'code')).to.deep.equal([
        { kind: 'output', size: output.length, content: output },
      ]);
      expect(w.blobs.objects.size).to.equal(0);
    });

    it('streams a large output to the blob store under a key of its own, then appends it', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      w.mark();
      await w.executor.completeStreamed(header(LARGE.length), chunksOf(LARGE));

      const key = 'evaluations/e1/output/streamed-id-1';
      expect(w.journal).to.deep.equal([
        'store.load e1',
        `blobs.putStream ${key}`,
        'store.load e1',
        'store.append e1@2',
        'publish 42',
      ]);
      expect(w.blobs.objects.get(key)?.equals(LARGE)).to.equal(true);
      expect(w.store.bodies.filter((b) => b.kind !== 'code')).to.deep.equal([
        { kind: 'output', size: LARGE.length, s3Key: key, home: 's3' },
      ]);
    });

    it('refuses a large output for an unknown evaluation before reading any of it', async () => {
      const w = world();
      let read = false;
      async function* output(): AsyncGenerator<Buffer> {
        read = true;
        yield* chunksOf(LARGE);
      }
      const err = await rejection(w.executor.completeStreamed(header(LARGE.length), output()));

      expect(err).to.be.instanceOf(NotFoundError);
      expect(read).to.equal(false);
      expect(w.journal).to.deep.equal(['store.load e1']);
    });

    it('deletes the upload, before answering, when the command is refused', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      await w.executor.execute(CANCEL);
      const err = await rejection(w.executor.completeStreamed(header(LARGE.length), chunksOf(LARGE)));

      expect(err).to.be.instanceOf(IllegalTransitionError);
      expect(w.blobs.objects.size).to.equal(0);
    });

    it('deletes the upload when the command, decided again after a conflict, is refused', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      // The first append loses to a cancel; deciding again against the cancelled state refuses.
      w.store.beforeAppend = async () => {
        w.store.beforeAppend = () => undefined;
        await w.other().execute(CANCEL);
      };
      const err = await rejection(w.executor.completeStreamed(header(LARGE.length), chunksOf(LARGE)));

      expect(err).to.be.instanceOf(IllegalTransitionError);
      expect(w.journal).to.include('store.conflict e1@2');
      expect(w.blobs.objects.size).to.equal(0);
    });

    it('deletes the upload of a repeat, answered as the first time', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      const first = await w.executor.completeStreamed(header(LARGE.length), chunksOf(LARGE));
      const again = await w.executor.completeStreamed(header(LARGE.length), chunksOf(LARGE, 7));

      expect(again).to.deep.equal(first);
      expect([...w.blobs.objects.keys()]).to.deep.equal(['evaluations/e1/output/streamed-id-1']);
    });

    it('keeps the upload when the append failed: it may have committed unseen', async () => {
      const w = world();
      await w.executor.execute(SUBMIT);
      w.store.beforeAppend = () => {
        throw new UnavailableError('PostgreSQL is unavailable (append); retry');
      };
      const err = await rejection(w.executor.completeStreamed(header(LARGE.length), chunksOf(LARGE)));

      expect(err).to.be.instanceOf(UnavailableError);
      expect([...w.blobs.objects.keys()]).to.deep.equal(['evaluations/e1/output/streamed-id-1']);
    });
  });
});
