import { createHash, randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { OutputKind, type ReadOutputResponse } from '../../shared/generated/crucible/storage/v1/query_service';
import { call, expectError, readStream, statusDetails, type Clients } from '../support/clients';
import { startServices, type RunningServices } from '../support/services';

/** Lowered so that an output past it (and so in S3) stays small. */
const INLINE_OUTPUT_MAX_BYTES = 64 * 1024;
const URL_MAX_EXPIRY_SECONDS = 600;

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

describe('e2e: stored bytes read back — code, ranges, presigned URLs', function () {
  this.timeout(60_000);
  let services: RunningServices;
  let clients: Clients;

  before(async () => {
    services = await startServices({
      overrides: {
        INLINE_OUTPUT_MAX_BYTES: String(INLINE_OUTPUT_MAX_BYTES),
        OUTPUT_URL_MAX_EXPIRY_SECONDS: String(URL_MAX_EXPIRY_SECONDS),
        OUTPUT_URL_DEFAULT_EXPIRY_SECONDS: '60',
        // A streamed output above 512 KiB goes up in 128 KiB parts: multipart in a small test.
        S3_MULTIPART_THRESHOLD_BYTES: String(512 * 1024),
        S3_PART_BYTES: String(128 * 1024),
      },
    });
    clients = services.clients;
  });

  after(async () => {
    await services?.close();
  });

  async function submit(evalId: string, code: string): Promise<string> {
    const { command, query } = clients;
    const submitted = await call(command, command.submitEvaluation, {
      evalId,
      code,
      language: 'python',
      engine: 'docker',
      timeoutSeconds: 30,
      requestId: '',
    });
    await call(query, query.getEvaluation, { evalId, minPosition: submitted.position });
    return submitted.position;
  }

  async function complete(evalId: string, output: Buffer): Promise<void> {
    const { command } = clients;
    await call(command, command.startEvaluation, { evalId, executorId: 'exec-1', containerId: 'c-1', requestId: '' });
    await call(command, command.completeEvaluation, { evalId, exitCode: 0, output, requestId: '' });
  }

  /** Reads a body (or a range of it) with ReadOutput: its bytes, and each chunk's [offset, size] and total size. */
  async function read(
    evalId: string,
    kind: OutputKind,
    offset = 0,
    length = 0,
  ): Promise<{ bytes: Buffer; offsets: number[]; totalSize: string | undefined }> {
    const stream = readStream<ReadOutputResponse>(
      clients.query.readOutput({ evalId, kind, offset: String(offset), length: String(length) }),
    );
    const chunks: Buffer[] = [];
    const offsets: number[] = [];
    let totalSize: string | undefined;
    for (;;) {
      let chunk: ReadOutputResponse;
      try {
        chunk = await stream.next();
      } catch {
        break;
      }
      offsets.push(Number(chunk.offset));
      totalSize = chunk.totalSize;
      chunks.push(Buffer.from(chunk.chunk));
    }
    const failed = await stream.finished;
    if (failed !== undefined) throw failed;
    return { bytes: Buffer.concat(chunks), offsets, totalSize };
  }

  describe('code', () => {
    it('reads small code back byte for byte from PostgreSQL, its SHA-256 the code_hash', async () => {
      const code = 'print("héllo, 世界 😀")\n';
      await submit('code-small', code);
      const { bytes, totalSize } = await read('code-small', OutputKind.OUTPUT_KIND_CODE);
      expect(bytes.toString('utf8')).to.equal(code);
      expect(totalSize).to.equal(String(Buffer.byteLength(code)));
      const { evaluation } = await call(clients.query, clients.query.getEvaluation, { evalId: 'code-small' });
      expect(evaluation?.codeHash).to.equal(sha256(bytes));
      const url = await expectError(
        call(clients.query, clients.query.getOutputUrl, { evalId: 'code-small', kind: OutputKind.OUTPUT_KIND_CODE }),
      );
      expect(url.code, 'code kept in PostgreSQL has no URL').to.equal(status.FAILED_PRECONDITION);
    });

    it('keeps code above CODE_INLINE_MAX_BYTES (100 KiB) in S3 and reads it back whole, by range and by URL', async () => {
      const line = '# ' + 'x'.repeat(60) + ' ✓\n';
      const code = line.repeat(Math.ceil((150 * 1024) / Buffer.byteLength(line)));
      const codeBytes = Buffer.from(code, 'utf8');
      await submit('code-large', code);
      const whole = await read('code-large', OutputKind.OUTPUT_KIND_CODE);
      expect(whole.bytes.equals(codeBytes)).to.equal(true);
      const { evaluation } = await call(clients.query, clients.query.getEvaluation, { evalId: 'code-large' });
      expect(evaluation?.codeHash, 'code_hash is of the whole code').to.equal(sha256(codeBytes));
      expect(evaluation?.codeSize).to.equal(String(codeBytes.length));

      const part = await read('code-large', OutputKind.OUTPUT_KIND_CODE, 100_000, 5_000);
      expect(part.offsets).to.deep.equal([100_000]);
      expect(part.bytes.equals(codeBytes.subarray(100_000, 105_000))).to.equal(true);

      const signed = await call(clients.query, clients.query.getOutputUrl, {
        evalId: 'code-large',
        kind: OutputKind.OUTPUT_KIND_CODE,
      });
      expect(signed.size).to.equal(String(codeBytes.length));
      const fetched = Buffer.from(await (await fetch(signed.url)).arrayBuffer());
      expect(fetched.equals(codeBytes)).to.equal(true);
    });
  });

  describe('a streamed output in parts', () => {
    it('uploads a streamed output above S3_MULTIPART_THRESHOLD_BYTES in parts; it reads back whole and by range', async () => {
      const output = randomBytes(3 * 1024 * 1024 + 333);
      await submit('multipart-out', 'print(1)');
      const { command } = clients;
      await call(command, command.startEvaluation, {
        evalId: 'multipart-out',
        executorId: 'exec-1',
        containerId: 'c-1',
        requestId: '',
      });
      await new Promise<void>((resolve, reject) => {
        const stream = command.completeEvaluationStream((err) => (err !== null ? reject(err) : resolve()));
        stream.write({
          header: { evalId: 'multipart-out', exitCode: 0, outputSize: String(output.length), requestId: '' },
        });
        for (let at = 0; at < output.length; at += 200_000)
          stream.write({ outputChunk: output.subarray(at, at + 200_000) });
        stream.end();
      });
      const whole = await read('multipart-out', OutputKind.OUTPUT_KIND_OUTPUT);
      expect(sha256(whole.bytes)).to.equal(sha256(output));
      const part = await read('multipart-out', OutputKind.OUTPUT_KIND_OUTPUT, 1_000_000, 300_000);
      expect(part.bytes.equals(output.subarray(1_000_000, 1_300_000))).to.equal(true);
    });
  });

  describe('ranges of an output', () => {
    it('reads any range of an output kept in S3 or in PostgreSQL, and refuses an offset past the end', async () => {
      const large = randomBytes(3 * INLINE_OUTPUT_MAX_BYTES + 11);
      await submit('range-s3', 'print(1)');
      await complete('range-s3', large);
      const small = randomBytes(INLINE_OUTPUT_MAX_BYTES / 2);
      await submit('range-pg', 'print(1)');
      await complete('range-pg', small);

      for (const [evalId, body] of [
        ['range-s3', large],
        ['range-pg', small],
      ] as const) {
        const middle = await read(evalId, OutputKind.OUTPUT_KIND_OUTPUT, 1000, 20_000);
        expect(middle.offsets, evalId).to.deep.equal([1000]);
        expect(middle.totalSize, evalId).to.equal(String(body.length));
        expect(middle.bytes.equals(body.subarray(1000, 21_000)), evalId).to.equal(true);
        const tail = await read(evalId, OutputKind.OUTPUT_KIND_OUTPUT, body.length - 5);
        expect(tail.bytes.equals(body.subarray(body.length - 5)), evalId).to.equal(true);
        const end = await read(evalId, OutputKind.OUTPUT_KIND_OUTPUT, body.length);
        expect(end.bytes.length, `${evalId}: a read at the end is empty`).to.equal(0);
        const past = await expectError(read(evalId, OutputKind.OUTPUT_KIND_OUTPUT, body.length + 1));
        expect(past.code, evalId).to.equal(status.OUT_OF_RANGE);
        expect(past.details, evalId).to.include(`(${body.length} bytes)`);
      }
      const negative = await expectError(read('range-pg', OutputKind.OUTPUT_KIND_OUTPUT, -1));
      expect(negative.code).to.equal(status.INVALID_ARGUMENT);
      expect(statusDetails(negative).badRequest?.fieldViolations.map((v) => v.field)).to.deep.equal(['offset']);
    });
  });

  describe('GetOutputUrl', () => {
    let output: Buffer;
    before(async () => {
      output = randomBytes(2 * INLINE_OUTPUT_MAX_BYTES + 3);
      await submit('url-out', 'print(1)');
      await complete('url-out', output);
    });

    it('hands out a URL that reads the output straight from S3, whole or by Range', async () => {
      const before = Date.now();
      const signed = await call(clients.query, clients.query.getOutputUrl, {
        evalId: 'url-out',
        kind: OutputKind.OUTPUT_KIND_OUTPUT,
        expiresIn: { seconds: '120', nanos: 0 },
      });
      expect(signed.size).to.equal(String(output.length));
      expect(new URL(signed.url).searchParams.get('X-Amz-Expires')).to.equal('120');
      const expiresAt = signed.expiresAt?.getTime() ?? 0;
      expect(expiresAt).to.be.within(before + 120_000 - 1000, Date.now() + 120_000 + 1000);

      const whole = await fetch(signed.url);
      expect(whole.status).to.equal(200);
      expect(Buffer.from(await whole.arrayBuffer()).equals(output)).to.equal(true);
      const ranged = await fetch(signed.url, { headers: { Range: 'bytes=100-199' } });
      expect(ranged.status).to.equal(206);
      expect(Buffer.from(await ranged.arrayBuffer()).equals(output.subarray(100, 200))).to.equal(true);
    });

    it('uses the configured default expiry, and refuses one past the maximum or under a second', async () => {
      const signed = await call(clients.query, clients.query.getOutputUrl, { evalId: 'url-out', kind: 0 });
      expect(new URL(signed.url).searchParams.get('X-Amz-Expires')).to.equal('60');
      for (const seconds of [String(URL_MAX_EXPIRY_SECONDS + 1), '0']) {
        const err = await expectError(
          call(clients.query, clients.query.getOutputUrl, {
            evalId: 'url-out',
            kind: OutputKind.OUTPUT_KIND_OUTPUT,
            expiresIn: { seconds, nanos: 0 },
          }),
        );
        expect(err.code, seconds).to.equal(status.INVALID_ARGUMENT);
        const violation = statusDetails(err).badRequest?.fieldViolations[0];
        expect([violation?.field, violation?.reason], seconds).to.deep.equal(['expires_in', 'OUT_OF_RANGE']);
      }
    });

    it('is NOT_FOUND for an unknown evaluation or a body never stored, FAILED_PRECONDITION for one in PostgreSQL', async () => {
      const unknown = await expectError(
        call(clients.query, clients.query.getOutputUrl, {
          evalId: 'no-such-eval',
          kind: OutputKind.OUTPUT_KIND_OUTPUT,
        }),
      );
      expect(unknown.code).to.equal(status.NOT_FOUND);
      const noError = await expectError(
        call(clients.query, clients.query.getOutputUrl, { evalId: 'url-out', kind: OutputKind.OUTPUT_KIND_ERROR }),
      );
      expect(noError.code).to.equal(status.NOT_FOUND);
      expect(noError.details).to.include('has no error stored');
      await submit('url-inline', 'print(1)');
      await complete('url-inline', Buffer.from('small output'));
      const inline = await expectError(
        call(clients.query, clients.query.getOutputUrl, { evalId: 'url-inline', kind: OutputKind.OUTPUT_KIND_OUTPUT }),
      );
      expect(inline.code).to.equal(status.FAILED_PRECONDITION);
      expect(statusDetails(inline).errorInfo?.reason).to.equal('BODY_INLINE');
      expect(inline.details).to.include('read it with ReadOutput');
    });
  });

  describe('direct uploads (CreateOutputUpload)', () => {
    async function running(evalId: string): Promise<void> {
      await submit(evalId, 'print(1)');
      const { command } = clients;
      await call(command, command.startEvaluation, { evalId, executorId: 'exec-1', containerId: 'c-1', requestId: '' });
    }

    /** PUTs each part of `body` to its URL (all but `skip`), returning the ETags. */
    async function putParts(
      parts: { partNumber: number; url: string; offset: string; size: string }[],
      body: Buffer,
      skip?: number,
    ): Promise<{ partNumber: number; etag: string }[]> {
      const etags: { partNumber: number; etag: string }[] = [];
      for (const part of parts) {
        if (part.partNumber === skip) continue;
        const offset = Number(part.offset);
        const answer = await fetch(part.url, {
          method: 'PUT',
          body: body.subarray(offset, offset + Number(part.size)),
        });
        expect(answer.status, `part ${part.partNumber}`).to.equal(200);
        etags.push({ partNumber: part.partNumber, etag: answer.headers.get('etag') ?? '' });
      }
      return etags;
    }

    function complete(evalId: string, uploadId: string, parts: { partNumber: number; etag: string }[]) {
      const { command } = clients;
      return call(command, command.completeEvaluation, {
        evalId,
        exitCode: 0,
        output: Buffer.alloc(0),
        requestId: '',
        upload: { uploadId, parts },
      });
    }

    it('takes an output PUT straight to S3 in parts, checked, whole; a retried completion answers the same', async () => {
      const { command, query } = clients;
      await running('direct-1');
      const output = randomBytes(600 * 1024 + 17);
      const created = await call(command, command.createOutputUpload, {
        evalId: 'direct-1',
        size: String(output.length),
        sha256: sha256(output),
      });
      expect(created.partSize).to.equal(String(128 * 1024));
      expect(created.parts.map((p) => p.partNumber)).to.deep.equal([1, 2, 3, 4, 5]);
      const etags = await putParts(created.parts, output);
      const done = await complete('direct-1', created.uploadId, etags.reverse());
      expect(done.revision).to.equal('3');
      const again = await complete('direct-1', created.uploadId, etags);
      expect(again).to.deep.equal(done);
      const whole = await read('direct-1', OutputKind.OUTPUT_KIND_OUTPUT);
      expect(sha256(whole.bytes)).to.equal(sha256(output));
      const { evaluation } = await call(query, query.getEvaluation, { evalId: 'direct-1', minPosition: done.position });
      expect([evaluation?.outputSize, evaluation?.outputLocation]).to.deep.equal([String(output.length), 's3']);
    });

    it('refuses an upload that is not what was promised, unfinished, foreign or unknown; nothing is recorded', async () => {
      const { command } = clients;
      await running('direct-2');
      await running('direct-3');
      const promised = randomBytes(300 * 1024);
      const other = randomBytes(300 * 1024);
      const create = (evalId: string) =>
        call(command, command.createOutputUpload, { evalId, size: String(promised.length), sha256: sha256(promised) });

      const wrong = await create('direct-2');
      const mismatch = await expectError(complete('direct-2', wrong.uploadId, await putParts(wrong.parts, other)));
      expect(mismatch.code).to.equal(status.FAILED_PRECONDITION);
      expect(statusDetails(mismatch).errorInfo?.reason).to.equal('UPLOAD_MISMATCH');

      const partial = await create('direct-2');
      const unfinished = await expectError(
        complete('direct-2', partial.uploadId, await putParts(partial.parts, promised, 2)),
      );
      expect(statusDetails(unfinished).errorInfo?.reason).to.equal('UPLOAD_UNFINISHED');
      expect(unfinished.details).to.include('part 2 missing');

      const foreign = await create('direct-3');
      const foreignEtags = await putParts(foreign.parts, promised);
      const refused = await expectError(complete('direct-2', foreign.uploadId, foreignEtags));
      expect(statusDetails(refused).errorInfo?.reason).to.equal('UPLOAD_FOREIGN');

      const unknown = await expectError(complete('direct-2', 'no-such-upload', foreignEtags));
      expect(unknown.code).to.equal(status.NOT_FOUND);

      // Still running, nothing recorded: the right upload completes it.
      const done = await complete('direct-3', foreign.uploadId, foreignEtags);
      expect(done.revision).to.equal('3');
      const { evaluation } = await call(clients.query, clients.query.getEvaluation, {
        evalId: 'direct-2',
        minPosition: done.position,
      });
      expect(evaluation?.revision).to.equal('2');
    });

    it('refuses bad requests by field, and an upload for an evaluation that has ended', async () => {
      const { command } = clients;
      const bad = await expectError(
        call(command, command.createOutputUpload, { evalId: 'direct-1', size: '0', sha256: 'xyz' }),
      );
      expect(bad.code).to.equal(status.INVALID_ARGUMENT);
      expect(statusDetails(bad).badRequest?.fieldViolations.map((v) => [v.field, v.reason])).to.deep.equal([
        ['size', 'OUT_OF_RANGE'],
        ['sha256', 'FORMAT'],
      ]);
      const ended = await expectError(
        call(command, command.createOutputUpload, { evalId: 'direct-1', size: '10', sha256: sha256(Buffer.alloc(10)) }),
      );
      expect(ended.code).to.equal(status.FAILED_PRECONDITION);
      const both = await expectError(
        call(command, command.completeEvaluation, {
          evalId: 'direct-2',
          exitCode: 0,
          output: Buffer.from('x'),
          requestId: '',
          upload: { uploadId: 'u', parts: [{ partNumber: 1, etag: 'e' }] },
        }),
      );
      expect(statusDetails(both).badRequest?.fieldViolations.map((v) => [v.field, v.reason])).to.deep.equal([
        ['output', 'MUST_BE_EMPTY'],
      ]);
    });
  });
});
