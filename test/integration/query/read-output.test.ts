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
): Promise<ReadOutputResponse[]> {
  return new Promise((resolve, reject) => {
    const chunks: ReadOutputResponse[] = [];
    const stream = replica.client.readOutput({ evalId, kind });
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
