import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
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
function putObject(bucket: string, key: string, content: Buffer, sha256Hex: string | undefined): PutObjectCommand {
  const command = new PutObjectCommand({ Bucket: bucket, Key: key, Body: content, ContentLength: content.length });
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

export function createS3BlobStore(client: S3Client, bucket: string): BlobStore {
  return {
    async put(key, content, sha256Hex) {
      try {
        await client.send(putObject(bucket, key, content, sha256Hex));
      } catch (err) {
        // Bucket names stay out of the caller's message; the log has the cause.
        if (isS3Unavailable(err)) throw new UnavailableError('output store (S3) is unavailable; retry', { cause: err });
        throw err;
      }
    },
  };
}
