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

export function createS3BlobStore(client: S3Client, bucket: string): BlobStore {
  return {
    async put(key, content) {
      try {
        await client.send(
          new PutObjectCommand({ Bucket: bucket, Key: key, Body: content, ContentLength: content.length }),
        );
      } catch (err) {
        // Bucket names stay out of the caller's message; the log has the cause.
        if (isS3Unavailable(err)) throw new UnavailableError('output store (S3) is unavailable; retry', { cause: err });
        throw err;
      }
    },
  };
}
