import { createHash, randomBytes } from 'node:crypto';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import type { EvaluationBodyRow } from '../../../shared/postgres';
import { createHarness, denseLog, eventsOf, type Harness } from './harness';

const MiB = 1024 * 1024;

type BodyRow = Pick<EvaluationBodyRow, 'size' | 'content' | 's3_key'>;

describe('command executor: where outputs are kept (PostgreSQL or S3)', function () {
  this.timeout(60_000);
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    await h.close();
  });

  async function bodyRow(evalId: string, kind = 'output'): Promise<BodyRow> {
    const { rows } = await h.sql.query<BodyRow>(
      'SELECT size::text, content, s3_key FROM evaluation_bodies WHERE eval_id = $1 AND kind = $2',
      [evalId, kind],
    );
    const row = rows[0];
    if (row === undefined) return expect.fail(`no ${kind} body for ${evalId}`);
    return row;
  }

  async function objectBytes(key: string): Promise<Buffer> {
    const object = await h.s3.send(new GetObjectCommand({ Bucket: h.env.config.s3.bucket, Key: key }));
    if (object.Body === undefined) return expect.fail(`no body for ${key}`);
    return Buffer.from(await object.Body.transformToByteArray());
  }

  async function objectCount(): Promise<number> {
    const listed = await h.s3.send(new ListObjectsV2Command({ Bucket: h.env.config.s3.bucket }));
    return listed.KeyCount ?? 0;
  }

  it('talks to the S3 server with checksums only WHEN_REQUIRED and path-style addressing', async () => {
    expect(h.env.config.s3.checksumMode).to.equal('WHEN_REQUIRED');
    expect(await h.s3.config.requestChecksumCalculation()).to.equal('WHEN_REQUIRED');
    expect(await h.s3.config.responseChecksumValidation()).to.equal('WHEN_REQUIRED');
    expect(h.s3.config.forcePathStyle).to.equal(true);
  });

  it('keeps an output of exactly 1 MiB in evaluation_bodies.content and nothing in S3', async () => {
    const output = randomBytes(MiB);
    const objectsBefore = await objectCount();
    await h.commands.submit({ evalId: 'inline-1' });
    await h.commands.complete({ evalId: 'inline-1', output, exitCode: 0 });

    const body = await bodyRow('inline-1');
    expect(body.s3_key).to.equal(null);
    expect(body.size).to.equal(String(MiB));
    expect(body.content?.equals(output), 'stored bytes identical').to.equal(true);
    const { rows } = await h.sql.query<{ output_location: string; output_preview: Buffer; output_size: string }>(
      'SELECT output_location, output_preview, output_size::text FROM evaluations WHERE eval_id = $1',
      ['inline-1'],
    );
    expect(rows[0]?.output_location).to.equal('postgres');
    expect(rows[0]?.output_size).to.equal(String(MiB));
    expect(rows[0]?.output_preview.equals(output.subarray(0, 1024))).to.equal(true);
    expect(await objectCount()).to.equal(objectsBefore);
  });

  it('uploads a 3 MiB output to S3 under the recorded key, byte-identical, with a preview in PostgreSQL', async () => {
    const output = randomBytes(3 * MiB);
    await h.commands.submit({ evalId: 'large-1' });
    await h.commands.start({ evalId: 'large-1' });
    const completed = await h.commands.complete({ evalId: 'large-1', output, exitCode: 0 });

    const body = await bodyRow('large-1');
    const digest = createHash('sha256').update(output).digest('hex');
    expect(body.content).to.equal(null);
    expect(body.size).to.equal(String(3 * MiB));
    expect(body.s3_key).to.equal(`evaluations/large-1/output/${digest}`);

    const key = body.s3_key ?? '';
    const head = await h.s3.send(new HeadObjectCommand({ Bucket: h.env.config.s3.bucket, Key: key }));
    expect(head.ContentLength).to.equal(3 * MiB);
    const stored = await objectBytes(key);
    expect(stored.length).to.equal(output.length);
    expect(stored.equals(output), 'S3 returns the very bytes uploaded').to.equal(true);

    const { rows } = await h.sql.query<{ output_location: string; output_preview: Buffer; output_size: string }>(
      'SELECT output_location, output_preview, output_size::text FROM evaluations WHERE eval_id = $1',
      ['large-1'],
    );
    expect(rows[0]?.output_location).to.equal('s3');
    expect(rows[0]?.output_size).to.equal(String(3 * MiB));
    expect(rows[0]?.output_preview.equals(output.subarray(0, 1024))).to.equal(true);

    const events = await eventsOf(h.sql, 'large-1');
    const event = events.at(-1);
    expect(event?.position).to.equal(completed.position);
    expect(event?.data.output).to.deep.equal({
      previewBase64: output.subarray(0, 1024).toString('base64'),
      size: 3 * MiB,
      location: 's3',
      s3Key: key,
    });
  });

  it('uploads a large error to S3 as well', async () => {
    const error = 'Traceback: '.repeat(Math.ceil((MiB + 10) / 11));
    await h.commands.submit({ evalId: 'large-error' });
    await h.commands.fail({ evalId: 'large-error', error, exitCode: 1 });
    const body = await bodyRow('large-error', 'error');
    expect(body.content).to.equal(null);
    expect(body.s3_key).to.match(/^evaluations\/large-error\/error\/[0-9a-f]{64}$/);
    expect((await objectBytes(body.s3_key ?? '')).toString('utf8')).to.equal(error);
  });

  it('keeps the event log dense', async () => {
    expect((await denseLog(h.sql)).problems).to.deep.equal([]);
  });
});
