import type { PutObjectCommandInput } from '@aws-sdk/client-s3';
import type { ServerSideEncryption } from '../config';
import { UnavailableError } from '../errors';

/** The HTTP status of an S3 error; undefined when no HTTP answer came. */
export function httpStatusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

/** True when S3 could not be reached or answered 5xx/throttling: a retry may succeed. */
export function isS3Unavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const status = httpStatusOf(err);
  if (status === undefined) return true; // no HTTP answer at all: connection refused, reset, timeout
  return status >= 500 || status === 429;
}

/** An S3 outage as UnavailableError (the caller retries); any other error as it is. */
export function unavailableOr(err: unknown): unknown {
  // Bucket names stay out of the caller's message; the log has the cause.
  return isS3Unavailable(err) ? new UnavailableError('output store (S3) is unavailable; retry', { cause: err }) : err;
}

/** What every object write names besides its key and body: the bucket, and the encryption asked for. */
export type ObjectTarget = Pick<PutObjectCommandInput, 'Bucket' | 'ServerSideEncryption' | 'SSEKMSKeyId'>;

/** The target of every write to `bucket`: `sse` (S3_SSE) on each, whatever the bucket's default. */
export function objectTarget(bucket: string, sse: ServerSideEncryption): ObjectTarget {
  if (sse.kind === 'none') return { Bucket: bucket };
  if (sse.kind === 'AES256') return { Bucket: bucket, ServerSideEncryption: 'AES256' };
  return { Bucket: bucket, ServerSideEncryption: 'aws:kms', ...(sse.keyId !== '' ? { SSEKMSKeyId: sse.keyId } : {}) };
}
