import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { EvaluationStatus, EventType } from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  OutputKind,
  type ReadOutputResponse,
  type WatchEvaluationResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { call, expectError, readStream, statusDetails, type Clients } from '../support/clients';
import { startServices, type RunningServices } from '../support/services';

const submission = (overrides: Record<string, unknown> = {}) => ({
  evalId: '',
  code: 'print("hello")',
  language: 'python',
  engine: 'docker',
  timeoutSeconds: 30,
  metadata: { suite: 'e2e' },
  requestId: '',
  ...overrides,
});

describe('e2e: an evaluation from executor command to API query and live stream', function () {
  this.timeout(60_000);
  let services: RunningServices;
  let clients: Clients;

  before(async () => {
    services = await startServices();
    ({ clients } = services);
  });

  after(async () => {
    await services?.close();
  });

  it('a watcher sees every step, in order, and the stream ends after the terminal state', async () => {
    const { command, query } = clients;
    const submitted = await call(command, command.submitEvaluation, submission());
    expect(submitted.revision).to.equal('1');
    // Reads are eventually consistent: an id the read model has not applied yet is NOT_FOUND
    // to a watcher, so a client that just wrote reads its write first.
    await call(query, query.getEvaluation, { evalId: submitted.evalId, minPosition: submitted.position });

    const watch = readStream<WatchEvaluationResponse>(query.watchEvaluation({ evalId: submitted.evalId }));
    const updates: WatchEvaluationResponse[] = [];
    const nextUpdate = async (): Promise<WatchEvaluationResponse> => {
      for (;;) {
        const message = await watch.next();
        if (message.update !== undefined) {
          updates.push(message);
          return message;
        }
      }
    };
    const first = await nextUpdate();
    expect(first.update?.evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_QUEUED);
    expect(first.update?.revision).to.equal('1');

    await call(command, command.startEvaluation, {
      evalId: submitted.evalId,
      executorId: 'executor-1',
      containerId: 'c-1',
      requestId: '',
    });
    const started = await nextUpdate();
    expect(started.update?.eventType).to.equal(EventType.EVENT_TYPE_EVALUATION_STARTED);
    expect(started.update?.evaluation?.executorId).to.equal('executor-1');

    const done = await call(command, command.completeEvaluation, {
      evalId: submitted.evalId,
      output: Buffer.from('hello\n'),
      exitCode: 0,
      requestId: '',
    });
    const completed = await nextUpdate();
    expect(completed.update?.evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_COMPLETED);
    expect(completed.update?.position).to.equal(done.position);
    expect(Buffer.from(completed.update?.evaluation?.outputPreview ?? []).toString()).to.equal('hello\n');
    expect(await watch.finished).to.equal(undefined);
    expect(updates.map((u) => u.update?.revision)).to.deep.equal(['1', '2', '3']);
  });

  it('reads its own write with min_position, and lists newest first', async () => {
    const { command, query } = clients;
    const a = await call(command, command.submitEvaluation, submission({ code: 'a = 1' }));
    const b = await call(command, command.submitEvaluation, submission({ code: 'b = 2' }));
    const got = await call(query, query.getEvaluation, { evalId: b.evalId, minPosition: b.position });
    expect(got.evaluation?.evalId).to.equal(b.evalId);
    expect(got.evaluation?.metadata).to.deep.equal({ suite: 'e2e' });
    expect(got.evaluation?.codeHash).to.match(/^[0-9a-f]{64}$/);

    const listed = await call(query, query.listEvaluations, {
      status: EvaluationStatus.EVALUATION_STATUS_QUEUED,
      pageSize: 1,
      pageToken: '',
      minPosition: b.position,
    });
    expect(listed.evaluations.map((e) => e.evalId)).to.deep.equal([b.evalId]);
    const nextPage = await call(query, query.listEvaluations, {
      status: EvaluationStatus.EVALUATION_STATUS_QUEUED,
      pageSize: 1,
      pageToken: listed.nextPageToken,
    });
    expect(nextPage.evaluations.map((e) => e.evalId)).to.deep.equal([a.evalId]);
  });

  it('a 3 MiB output round-trips through S3 with its preview', async () => {
    const { command, query } = clients;
    const output = randomBytes(3 * 1024 * 1024);
    const { evalId } = await call(command, command.submitEvaluation, submission());
    const done = await call(
      command,
      command.completeEvaluation,
      { evalId, output, exitCode: 0, requestId: '' },
      30_000,
    );
    const got = await call(query, query.getEvaluation, { evalId, minPosition: done.position });
    expect(got.evaluation?.outputLocation).to.equal('s3');
    expect(got.evaluation?.outputSize).to.equal(String(output.length));
    expect(Buffer.from(got.evaluation?.outputPreview ?? []).equals(output.subarray(0, 1024))).to.equal(true);

    expect((await readWholeOutput(evalId)).equals(output)).to.equal(true);
  });

  it('a 3 MiB output streamed with CompleteEvaluationStream reads back whole; the same bytes sent whole are a repeat', async () => {
    const { command, query } = clients;
    const output = randomBytes(3 * 1024 * 1024 + 5);
    const { evalId } = await call(command, command.submitEvaluation, submission());
    const header = { evalId, exitCode: 0, outputSize: String(output.length), requestId: '' };
    const chunks = Array.from({ length: Math.ceil(output.length / 65536) }, (_, i) =>
      output.subarray(i * 65536, (i + 1) * 65536),
    );
    const done = await completeStreamed([{ header }, ...chunks.map((outputChunk) => ({ outputChunk }))]);
    expect(done.revision).to.equal('2');

    const got = await call(query, query.getEvaluation, { evalId, minPosition: done.position });
    expect(got.evaluation?.outputLocation).to.equal('s3');
    expect(got.evaluation?.outputSize).to.equal(String(output.length));
    expect(Buffer.from(got.evaluation?.outputPreview ?? []).equals(output.subarray(0, 1024))).to.equal(true);
    expect((await readWholeOutput(evalId)).equals(output), 'ReadOutput returns the bytes streamed').to.equal(true);

    const repeat = await call(
      command,
      command.completeEvaluation,
      { evalId, output, exitCode: 0, requestId: '' },
      30_000,
    );
    expect(repeat).to.deep.equal(done);
  });

  it('CompleteEvaluationStream names the field and rule of a malformed stream, and writes nothing', async () => {
    const { command } = clients;
    const { evalId } = await call(command, command.submitEvaluation, submission());
    const header = (outputSize: number) => ({ evalId, exitCode: 0, outputSize: String(outputSize), requestId: '' });
    const cases: [object[], string, string][] = [
      [[{ outputChunk: Buffer.from('no header') }], 'header', 'REQUIRED'],
      [[], 'header', 'REQUIRED'],
      [[{ header: header(10) }, { outputChunk: Buffer.from('short') }], 'output_chunk', 'SIZE_MISMATCH'],
      [[{ header: header(3) }, { outputChunk: Buffer.from('too long') }], 'output_chunk', 'SIZE_MISMATCH'],
      [[{ header: header(2) }, { header: header(2) }], 'header', 'ONLY_FIRST'],
      [[{ header: header(2 ** 40) }], 'header.output_size', 'TOO_LARGE'],
      [[{ header: { ...header(1), evalId: '' } }, { outputChunk: Buffer.from('x') }], 'header.eval_id', 'REQUIRED'],
    ];
    for (const [messages, field, rule] of cases) {
      const err = await expectError(completeStreamed(messages));
      expect(err.code, `${field} ${rule}`).to.equal(status.INVALID_ARGUMENT);
      const violations = statusDetails(err).badRequest?.fieldViolations ?? [];
      expect(violations.map((v) => [v.field, v.reason])).to.deep.include([field, rule]);
    }
    // Nothing was written: the evaluation is still at revision 1 and can complete.
    const done = await completeStreamed([{ header: header(2) }, { outputChunk: Buffer.from('ok') }]);
    expect(done.revision).to.equal('2');
  });

  /** Reads an evaluation's output with ReadOutput, checking each chunk's offset and the total size. */
  async function readWholeOutput(evalId: string): Promise<Buffer> {
    const stream = readStream<ReadOutputResponse>(
      clients.query.readOutput({ evalId, kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' }),
    );
    const chunks: Buffer[] = [];
    let offset = 0;
    let totalSize: string | undefined;
    for (;;) {
      let chunk: ReadOutputResponse;
      try {
        chunk = await stream.next();
      } catch {
        break;
      }
      expect(chunk.offset).to.equal(String(offset));
      totalSize ??= chunk.totalSize;
      expect(chunk.totalSize).to.equal(totalSize);
      chunks.push(Buffer.from(chunk.chunk));
      offset += chunk.chunk.length;
    }
    expect(await stream.finished).to.equal(undefined);
    expect(String(offset)).to.equal(totalSize);
    return Buffer.concat(chunks);
  }

  /** One CompleteEvaluationStream call: writes `messages`, ends, and resolves with the answer. */
  function completeStreamed(messages: object[]): Promise<{ evalId: string; revision: string; position: string }> {
    const { command } = clients;
    return new Promise((resolve, reject) => {
      const stream = command.completeEvaluationStream((err, response) =>
        err !== null ? reject(err) : resolve(response),
      );
      for (const message of messages) stream.write(message);
      stream.end();
    });
  }

  it('answers every error class with its status code and details', async () => {
    const { command, query } = clients;
    const invalid = await expectError(
      call(command, command.submitEvaluation, submission({ code: '', language: 'cobol' })),
    );
    expect(invalid.code).to.equal(status.INVALID_ARGUMENT);
    const violations = statusDetails(invalid).badRequest?.fieldViolations ?? [];
    expect(violations.map((v) => [v.field, v.reason])).to.deep.include.members([
      ['code', 'REQUIRED'],
      ['language', 'UNKNOWN'],
    ]);

    const missing = await expectError(
      call(command, command.startEvaluation, {
        evalId: 'no-such-eval',
        executorId: 'x',
        containerId: '',
        requestId: '',
      }),
    );
    expect(missing.code).to.equal(status.NOT_FOUND);
    const missingRead = await expectError(call(query, query.getEvaluation, { evalId: 'no-such-eval' }));
    expect(missingRead.code).to.equal(status.NOT_FOUND);

    const { evalId } = await call(command, command.submitEvaluation, submission({ evalId: `e2e-${Date.now()}` }));
    const taken = await expectError(call(command, command.submitEvaluation, submission({ evalId, code: 'other()' })));
    expect(taken.code).to.equal(status.ALREADY_EXISTS);

    const stale = await expectError(
      call(command, command.cancelEvaluation, { evalId, reason: 'stop', requestId: '', expectedRevision: '7' }),
    );
    expect(stale.code).to.equal(status.ABORTED);
    expect(stale.details).to.contain('revision 1');
    expect(statusDetails(stale).errorInfo?.metadata).to.include({ current_revision: '1' });

    await call(command, command.failEvaluation, { evalId, error: 'boom', exitCode: 1, reason: 0, requestId: '' });
    const illegal = await expectError(
      call(command, command.startEvaluation, { evalId, executorId: 'x', containerId: '', requestId: '' }),
    );
    expect(illegal.code).to.equal(status.FAILED_PRECONDITION);
    expect(statusDetails(illegal).typeUrls).to.include('type.googleapis.com/google.rpc.PreconditionFailure');

    const unknownWatch = readStream(query.watchEvaluation({ evalId: 'never-submitted' }));
    const watchError = await unknownWatch.finished;
    expect(watchError?.code).to.equal(status.NOT_FOUND);
  });

  it('concurrent duplicate submits write one evaluation and all get the same answer', async () => {
    const { command } = clients;
    const requestId = `dup-${Date.now()}`;
    const answers = await Promise.all(
      Array.from({ length: 16 }, () =>
        call(command, command.submitEvaluation, submission({ requestId, code: 'dup()' })),
      ),
    );
    const distinct = new Set(answers.map((a) => `${a.evalId}/${a.revision}/${a.position}`));
    expect(distinct.size).to.equal(1);
    const evalId = answers[0]?.evalId ?? '';
    const sameId = await Promise.all(
      Array.from({ length: 16 }, () =>
        call(command, command.submitEvaluation, submission({ evalId: `${evalId}-x`, code: 'same()' })),
      ),
    );
    expect(new Set(sameId.map((a) => a.position)).size).to.equal(1);
  });
});
