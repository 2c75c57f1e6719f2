import { randomBytes } from 'node:crypto';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { OutputKind, type ReadOutputResponse } from '../../../shared/generated/crucible/storage/v1/query_service';
import { CHUNK_BYTES as CHUNK } from '../../../services/query/handlers/read-output';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

function readAll(
  replica: Replica,
  evalId: string,
  kind = OutputKind.OUTPUT_KIND_UNSPECIFIED,
  range: { offset: number; length: number } = { offset: 0, length: 0 },
): Promise<ReadOutputResponse[]> {
  return new Promise((resolve, reject) => {
    const chunks: ReadOutputResponse[] = [];
    const stream = replica.client.readOutput({
      evalId,
      kind,
      offset: String(range.offset),
      length: String(range.length),
    });
    stream.on('data', (m: ReadOutputResponse) => chunks.push(m));
    stream.on('error', (err: ServiceError) => reject(err));
    stream.on('end', () => resolve(chunks));
  });
}

function check(chunks: ReadOutputResponse[], body: Buffer): void {
  let offset = 0;
  chunks.forEach((c, i) => {
    expect(c.offset, `chunk ${i}`).to.equal(String(offset));
    expect(c.totalSize).to.equal(String(body.length));
    expect(c.chunk.length, `chunk ${i}`).to.equal(Math.min(CHUNK, body.length - offset));
    offset += c.chunk.length;
  });
  expect(Buffer.concat(chunks.map((c) => c.chunk)).equals(body)).to.equal(true);
}

describe('query ReadOutput (bodies from PostgreSQL and S3)', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let replica: Replica;

  before(async () => {
    h = await createQueryHarness();
    replica = await h.startReplica();
    await replica.service.projector.whenCaughtUp();
  });
  after(async () => {
    await h.close();
  });

  it('streams an inline body from bytea in chunks with offsets and total size', async () => {
    const body = randomBytes(CHUNK + 200 * 1024 + 17);
    await h.writer.submit('out-inline');
    await h.writer.putBody('out-inline', 'output', { content: body });
    const chunks = await readAll(replica, 'out-inline');
    expect(chunks).to.have.length(2);
    check(chunks, body);
  });

  it('streams a large body from S3, byte for byte', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 5);
    const key = 'outputs/out-s3/output';
    await h.s3.send(new PutObjectCommand({ Bucket: h.config.s3.bucket, Key: key, Body: body }));
    await h.writer.submit('out-s3');
    await h.writer.putBody('out-s3', 'output', { s3Key: key, size: body.length });
    const chunks = await readAll(replica, 'out-s3', OutputKind.OUTPUT_KIND_OUTPUT);
    expect(chunks).to.have.length(Math.ceil(body.length / CHUNK));
    check(chunks, body);
  });

  it('reads a range of an S3 body with one ranged GET: its bytes, offsets in the whole body', async () => {
    const body = randomBytes(2 * CHUNK + 4321);
    const key = 'outputs/out-s3-range/output';
    await h.s3.send(new PutObjectCommand({ Bucket: h.config.s3.bucket, Key: key, Body: body }));
    await h.writer.submit('out-s3-range');
    await h.writer.putBody('out-s3-range', 'output', { s3Key: key, size: body.length });
    const range = { offset: CHUNK + 3, length: CHUNK + 10 };
    const chunks = await readAll(replica, 'out-s3-range', OutputKind.OUTPUT_KIND_OUTPUT, range);
    expect(chunks.map((c) => [Number(c.offset), c.chunk.length, c.totalSize])).to.deep.equal([
      [CHUNK + 3, CHUNK, String(body.length)],
      [2 * CHUNK + 3, 10, String(body.length)],
    ]);
    expect(Buffer.concat(chunks.map((c) => c.chunk)).equals(body.subarray(CHUNK + 3, 2 * CHUNK + 13))).to.equal(true);
    const tail = await readAll(replica, 'out-s3-range', OutputKind.OUTPUT_KIND_OUTPUT, {
      offset: body.length - 7,
      length: 100,
    });
    expect(Buffer.concat(tail.map((c) => c.chunk)).equals(body.subarray(body.length - 7))).to.equal(true);
    const past = await readAll(replica, 'out-s3-range', OutputKind.OUTPUT_KIND_OUTPUT, {
      offset: body.length + 1,
      length: 0,
    }).then(
      () => undefined,
      (e: ServiceError) => e,
    );
    expect(past?.code).to.equal(grpcStatus.OUT_OF_RANGE);
  });

  it('reads the code with kind CODE, and a range of it from bytea', async () => {
    const code = Buffer.from('print("héllo")\n'.repeat(1000), 'utf8');
    await h.writer.submit('out-code');
    await h.writer.putBody('out-code', 'code', { content: code });
    check(await readAll(replica, 'out-code', OutputKind.OUTPUT_KIND_CODE), code);
    const part = await readAll(replica, 'out-code', OutputKind.OUTPUT_KIND_CODE, { offset: 15, length: 30 });
    expect(part.map((c) => c.offset)).to.deep.equal(['15']);
    expect(Buffer.concat(part.map((c) => c.chunk)).equals(code.subarray(15, 45))).to.equal(true);
  });

  it('reads the error body with kind ERROR, nothing when there is no such body, NOT_FOUND when unknown', async () => {
    const error = Buffer.from('Traceback: boom\n'.repeat(10), 'utf8');
    await h.writer.submit('out-error');
    await h.writer.putBody('out-error', 'error', { content: error });
    check(await readAll(replica, 'out-error', OutputKind.OUTPUT_KIND_ERROR), error);
    expect(await readAll(replica, 'out-error', OutputKind.OUTPUT_KIND_OUTPUT)).to.deep.equal([]);
    const err = await readAll(replica, 'out-nobody').then(
      () => undefined,
      (e: ServiceError) => e,
    );
    expect(err?.code).to.equal(grpcStatus.NOT_FOUND);
    const invalid = await readAll(replica, '', 9 as OutputKind).then(
      () => undefined,
      (e: ServiceError) => e,
    );
    expect(invalid?.code).to.equal(grpcStatus.INVALID_ARGUMENT);
  });
});
