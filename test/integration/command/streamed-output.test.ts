import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { IllegalTransitionError, NotFoundError, ValidationError } from '../../../shared/errors';
import { validateCompleteHeader } from '../../../services/command/domain';
import { createHarness, eventsOf, type Harness } from './harness';

const MiB = 1024 * 1024;

/** `bytes` in chunks of `size`, as a client stream delivers them. */
function inChunks(bytes: Buffer, size: number): AsyncIterable<Buffer> {
  const chunks: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += size) chunks.push(bytes.subarray(at, at + size));
  return Readable.from(chunks);
}

describe('command executor: outputs completed as a stream', function () {
  this.timeout(60_000);
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    await h.close();
  });

  const header = (evalId: string, outputSize: number, requestId = '') =>
    validateCompleteHeader({ evalId, exitCode: 0, outputSize: String(outputSize), requestId }, h.env.config.limits);

  async function keysOf(evalId: string): Promise<string[]> {
    const listed = await h.s3.send(
      new ListObjectsV2Command({ Bucket: h.env.config.s3.bucket, Prefix: `evaluations/${evalId}/` }),
    );
    return (listed.Contents ?? []).map((o) => o.Key ?? '');
  }

  async function objectBytes(key: string): Promise<Buffer> {
    const object = await h.s3.send(new GetObjectCommand({ Bucket: h.env.config.s3.bucket, Key: key }));
    return Buffer.from((await object.Body?.transformToByteArray()) ?? []);
  }

  it('streams a 3 MiB output to S3 under a key of its own, byte-identical, with its preview and digest', async () => {
    const output = randomBytes(3 * MiB + 123);
    await h.commands.submit({ evalId: 'streamed-1' });
    const completed = await h.executor.completeStreamed(
      header('streamed-1', output.length),
      inChunks(output, 64 * 1024),
    );

    const [key, ...others] = await keysOf('streamed-1');
    expect(others).to.deep.equal([]);
    expect(key).to.match(/^evaluations\/streamed-1\/output\/streamed-/);
    expect((await objectBytes(key ?? '')).equals(output), 'S3 holds the very bytes streamed').to.equal(true);
    const event = (await eventsOf(h.sql, 'streamed-1')).at(-1);
    expect(event?.position).to.equal(completed.position);
    expect(event?.data.output).to.deep.equal({
      previewBase64: output.subarray(0, 1024).toString('base64'),
      size: output.length,
      location: 's3',
      s3Key: key,
    });
    const { rows } = await h.sql.query<{ size: string; s3_key: string }>(
      `SELECT size::text, s3_key FROM evaluation_bodies WHERE eval_id = 'streamed-1' AND kind = 'output'`,
    );
    expect(rows).to.deep.equal([{ size: String(output.length), s3_key: key }]);
  });

  it('keeps a streamed output within the inline limit in PostgreSQL, as CompleteEvaluation would', async () => {
    const output = randomBytes(100 * 1024);
    await h.commands.submit({ evalId: 'streamed-small' });
    await h.executor.completeStreamed(header('streamed-small', output.length), inChunks(output, 7000));
    const { rows } = await h.sql.query<{ content: Buffer; s3_key: string | null }>(
      `SELECT content, s3_key FROM evaluation_bodies WHERE eval_id = 'streamed-small' AND kind = 'output'`,
    );
    expect(rows[0]?.s3_key).to.equal(null);
    expect(rows[0]?.content.equals(output)).to.equal(true);
    expect(await keysOf('streamed-small')).to.deep.equal([]);
  });

  it('is the same command as CompleteEvaluation with the same bytes: the repeat answers as before and its upload is deleted', async () => {
    const output = randomBytes(2 * MiB);
    await h.commands.submit({ evalId: 'streamed-repeat' });
    const first = await h.commands.complete({ evalId: 'streamed-repeat', output, exitCode: 0 });
    const digest = createHash('sha256').update(output).digest('hex');
    expect(await keysOf('streamed-repeat')).to.deep.equal([`evaluations/streamed-repeat/output/${digest}`]);

    const repeat = await h.executor.completeStreamed(header('streamed-repeat', output.length), inChunks(output, MiB));
    expect(repeat).to.deep.equal(first);
    expect(await keysOf('streamed-repeat'), 'only the first upload is left').to.deep.equal([
      `evaluations/streamed-repeat/output/${digest}`,
    ]);
    expect(await eventsOf(h.sql, 'streamed-repeat')).to.have.length(2);
  });

  it('deletes the upload of a refused completion and writes nothing', async () => {
    await h.commands.submit({ evalId: 'streamed-refused' });
    await h.commands.cancel({ evalId: 'streamed-refused', reason: 'stop' });
    const output = randomBytes(2 * MiB);
    const refused = await h.executor
      .completeStreamed(header('streamed-refused', output.length), inChunks(output, MiB))
      .then(
        () => expect.fail('a cancelled evaluation cannot complete'),
        (err: unknown) => err,
      );
    expect(refused).to.be.instanceOf(IllegalTransitionError);
    expect(await keysOf('streamed-refused')).to.deep.equal([]);
    expect(await eventsOf(h.sql, 'streamed-refused')).to.have.length(2);
  });

  it('answers NOT_FOUND for an unknown evaluation before taking in a large output', async () => {
    let pulled = 0;
    function* counted(): Generator<Buffer> {
      for (let i = 0; i < 4; i++) {
        pulled += 1;
        yield randomBytes(MiB);
      }
    }
    const missing = await h.executor
      .completeStreamed(header('streamed-nobody', 4 * MiB), Readable.from(counted()))
      .then(
        () => expect.fail('an unknown evaluation cannot complete'),
        (err: unknown) => err,
      );
    expect(missing).to.be.instanceOf(NotFoundError);
    expect(pulled, 'no output chunk was read').to.equal(0);
    expect(await keysOf('streamed-nobody')).to.deep.equal([]);
  });

  it('stores nothing when the stream fails part-way, and hears the stream’s own error', async () => {
    await h.commands.submit({ evalId: 'streamed-broken' });
    const broken = new ValidationError([{ field: 'output_chunk', rule: 'SIZE_MISMATCH', description: 'short' }]);
    function* halfThenFail(): Generator<Buffer> {
      yield randomBytes(MiB);
      yield randomBytes(MiB);
      throw broken;
    }
    const failed = await h.executor
      .completeStreamed(header('streamed-broken', 4 * MiB), Readable.from(halfThenFail()))
      .then(
        () => expect.fail('a broken stream cannot complete'),
        (err: unknown) => err,
      );
    expect(failed).to.equal(broken);
    expect(await keysOf('streamed-broken')).to.deep.equal([]);
    expect(await eventsOf(h.sql, 'streamed-broken')).to.have.length(1);
  });
});
