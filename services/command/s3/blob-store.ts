import { Readable } from 'node:stream';
import { DeleteObjectCommand, PutObjectCommand, type PutObjectCommandInput, type S3Client } from '@aws-sdk/client-s3';
import type { ServerSideEncryption } from '../../../shared/config';
import { UnavailableError } from '../../../shared/errors';
import type { BlobStore } from '../application/ports';

/** True when S3 could not be reached or answered 5xx/throttling: a retry may succeed. */
export function isS3Unavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  if (status === undefined) return true; // no HTTP answer at all: connection refused, reset, timeout
  return status >= 500 || status === 429;
}

/**
 * A PutObject whose SigV4 payload hash is given: the signer uses an `x-amz-content-sha256`
 * header as it is, where it would otherwise hash the whole body once more (S3 checks it
 * against the bytes it receives, so a wrong value is refused, never stored).
 */
function putObject(
  target: ObjectTarget,
  key: string,
  content: Buffer,
  sha256Hex: string | undefined,
): PutObjectCommand {
  const command = new PutObjectCommand({ ...target, Key: key, Body: content, ContentLength: content.length });
  if (sha256Hex !== undefined) {
    command.middlewareStack.add(
      (next) => (args) => {
        const request = args.request as { headers?: Record<string, string> };
        if (request.headers !== undefined) request.headers['x-amz-content-sha256'] = sha256Hex;
        return next(args);
      },
      { step: 'build', name: 'precomputedPayloadSha256' },
    );
  }
  return command;
}

function unavailableOr(err: unknown): unknown {
  // Bucket names stay out of the caller's message; the log has the cause.
  return isS3Unavailable(err) ? new UnavailableError('output store (S3) is unavailable; retry', { cause: err }) : err;
}

/** What every object write names besides its key and body: the bucket, and the encryption asked for. */
type ObjectTarget = Pick<PutObjectCommandInput, 'Bucket' | 'ServerSideEncryption' | 'SSEKMSKeyId'>;

function targetOf(bucket: string, sse: ServerSideEncryption): ObjectTarget {
  if (sse.kind === 'none') return { Bucket: bucket };
  if (sse.kind === 'AES256') return { Bucket: bucket, ServerSideEncryption: 'AES256' };
  return { Bucket: bucket, ServerSideEncryption: 'aws:kms', ...(sse.keyId !== '' ? { SSEKMSKeyId: sse.keyId } : {}) };
}

/**
 * Bodies in `bucket`. Every write asks for `sse` (S3_SSE): encryption at rest is then the
 * store's, whatever the bucket's default says.
 */
export function createS3BlobStore(
  client: S3Client,
  bucket: string,
  sse: ServerSideEncryption = { kind: 'none' },
): BlobStore {
  const target = targetOf(bucket, sse);
  return {
    async put(key, content, sha256Hex) {
      try {
        await client.send(putObject(target, key, content, sha256Hex));
      } catch (err) {
        throw unavailableOr(err);
      }
    },

    async putStream(key, size, source) {
      // A source that throws ends the request (the SDK would otherwise wait for the rest of
      // ContentLength), and its error, not the abort's, is what the caller hears.
      const abort = new AbortController();
      let sourceError: Error | undefined;
      async function* watched(): AsyncGenerator<Buffer> {
        try {
          yield* source;
        } catch (err) {
          sourceError = err instanceof Error ? err : new Error(String(err));
          abort.abort();
          throw err;
        }
      }
      const body = Readable.from(watched(), { objectMode: false });
      body.on('error', () => undefined); // reported through sourceError
      try {
        // A stream body is sent with an UNSIGNED-PAYLOAD signature: the service hashes it on the way.
        await client.send(new PutObjectCommand({ ...target, Key: key, Body: body, ContentLength: size }), {
          abortSignal: abort.signal,
        });
      } catch (err) {
        if (sourceError === undefined) throw unavailableOr(err);
        // S3 stores nothing of a PutObject cut short, but not every S3 server is so careful
        // (s3rver keeps what it got): the key is this upload's own, so removing it is safe.
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })).catch(() => undefined);
        throw sourceError;
      } finally {
        body.destroy();
      }
    },

    async delete(key) {
      try {
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      } catch (err) {
        throw unavailableOr(err);
      }
    },
  };
}
