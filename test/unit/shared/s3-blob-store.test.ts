import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { S3Client } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { createS3BlobStore } from '../../../shared/blobs';

interface SentRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: unknown;
}

/** An S3 client whose transport records each request and answers 200 (no I/O). */
function recordingClient(): { client: S3Client; sent: SentRequest[] } {
  const sent: SentRequest[] = [];
  const client = new S3Client({
    region: 'us-east-1',
    endpoint: 'http://s3.invalid',
    forcePathStyle: true,
    credentials: { accessKeyId: 'id', secretAccessKey: 'secret' },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      handle: (request: SentRequest) => {
        sent.push(request);
        return Promise.resolve({ response: { statusCode: 200, headers: {}, body: Readable.from([]) } });
      },
    },
  });
  return { client, sent };
}

describe('S3 blob store', () => {
  const content = Buffer.from('x'.repeat(1000));
  const sha256 = createHash('sha256').update(content).digest('hex');

  it('signs the upload with the digest it is given (no second hash of the body)', async () => {
    const { client, sent } = recordingClient();
    await createS3BlobStore(client, 'bucket').put('evaluations/e1/output/abc', content, sha256);
    expect(sent).to.have.length(1);
    expect(sent[0]!.method).to.equal('PUT');
    expect(sent[0]!.path).to.equal('/bucket/evaluations/e1/output/abc');
    expect(sent[0]!.headers['x-amz-content-sha256']).to.equal(sha256);
    expect(sent[0]!.headers.authorization).to.include('x-amz-content-sha256');
    expect(sent[0]!.body).to.equal(content);
  });

  it('hashes the body itself when given no digest, to the same header', async () => {
    const { client, sent } = recordingClient();
    await createS3BlobStore(client, 'bucket').put('k', content);
    expect(sent[0]!.headers['x-amz-content-sha256']).to.equal(sha256);
  });

  it('streams a body of a declared size in one PUT, signed UNSIGNED-PAYLOAD (it is hashed by the caller)', async () => {
    const { client, sent } = recordingClient();
    const parts = Readable.from([content.subarray(0, 400), content.subarray(400)]);
    await createS3BlobStore(client, 'bucket').putStream('evaluations/e1/output/streamed-1', content.length, parts);
    expect(sent).to.have.length(1);
    expect(sent[0]!.method).to.equal('PUT');
    expect(sent[0]!.headers['content-length']).to.equal(String(content.length));
    expect(sent[0]!.headers['x-amz-content-sha256']).to.equal('UNSIGNED-PAYLOAD');
    expect(sent[0]!.body).to.be.instanceOf(Readable);
  });

  describe('server-side encryption (S3_SSE)', () => {
    async function writes(sse: Parameters<typeof createS3BlobStore>[2]): Promise<SentRequest[]> {
      const { client, sent } = recordingClient();
      const store = createS3BlobStore(client, 'bucket', sse);
      await store.put('a', content, sha256);
      await store.putStream('b', content.length, Readable.from([content]));
      return sent;
    }

    it('asks for AES256 on every object written, a put and a streamed put', async () => {
      const sent = await writes({ kind: 'AES256' });
      expect(sent.map((r) => r.headers['x-amz-server-side-encryption'])).to.deep.equal(['AES256', 'AES256']);
      expect(sent.map((r) => r.headers['x-amz-server-side-encryption-aws-kms-key-id'])).to.deep.equal([
        undefined,
        undefined,
      ]);
    });

    it('asks for aws:kms with the configured key, or the bucket default key when none is', async () => {
      const keyed = await writes({ kind: 'aws:kms', keyId: 'arn:aws:kms:us-east-1:1:key/k' });
      expect(keyed.map((r) => r.headers['x-amz-server-side-encryption'])).to.deep.equal(['aws:kms', 'aws:kms']);
      expect(keyed.map((r) => r.headers['x-amz-server-side-encryption-aws-kms-key-id'])).to.deep.equal([
        'arn:aws:kms:us-east-1:1:key/k',
        'arn:aws:kms:us-east-1:1:key/k',
      ]);
      const unkeyed = await writes({ kind: 'aws:kms', keyId: '' });
      expect(unkeyed.map((r) => r.headers['x-amz-server-side-encryption-aws-kms-key-id'])).to.deep.equal([
        undefined,
        undefined,
      ]);
    });

    it('sends no encryption header with S3_SSE=none (the bucket default applies)', async () => {
      const sent = await writes({ kind: 'none' });
      expect(sent.flatMap((r) => Object.keys(r.headers).filter((h) => h.includes('server-side')))).to.deep.equal([]);
    });
  });

  it('deletes with one DELETE of the key', async () => {
    const { client, sent } = recordingClient();
    await createS3BlobStore(client, 'bucket').delete('evaluations/e1/output/streamed-1');
    expect(sent.map((r) => [r.method, r.path])).to.deep.equal([['DELETE', '/bucket/evaluations/e1/output/streamed-1']]);
  });
});
