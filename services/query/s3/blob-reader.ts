import { GetObjectCommand, NoSuchKey, type GetObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { UnavailableError } from '../../../shared/errors';
import type { BlobRange, BlobReader } from '../handlers/read-output';

function httpStatusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

/** The HTTP Range of `range`: its end is exclusive, the header's inclusive. */
function rangeHeader(range: BlobRange): string {
  return `bytes=${range.offset}-${range.end !== undefined ? range.end - 1 : ''}`;
}

/** Large bodies from the configured bucket, streamed (never loaded whole). */
export function createS3BlobReader(client: S3Client, bucket: string): BlobReader {
  return {
    async open(key, signal, range) {
      let response: GetObjectCommandOutput;
      try {
        const command = new GetObjectCommand({
          Bucket: bucket,
          Key: key,
          ...(range !== undefined ? { Range: rangeHeader(range) } : {}),
          ...(range?.version !== undefined ? { IfMatch: range.version } : {}),
        });
        response = await client.send(command, { abortSignal: signal });
      } catch (err) {
        // A missing object behind a committed row is a bug or lost data, not an outage: INTERNAL.
        if (err instanceof NoSuchKey)
          throw new Error(`stored body ${key} is missing from the object store`, { cause: err });
        // 412: If-Match failed. 416: the object is now shorter than the offset, so another one.
        const status = httpStatusOf(err);
        if (range?.version !== undefined && (status === 412 || status === 416)) return 'replaced';
        throw new UnavailableError('the output store is unavailable', { cause: err });
      }
      // In Node the SDK's body is an IncomingMessage (a Readable): async-iterable, paused
      // while the consumer awaits.
      const body = response.Body as Readable | undefined;
      if (body === undefined) throw new Error(`object store returned no body for ${key}`);
      // Destroying the body closes its socket, whatever the SDK still listens to.
      const stop = (): void => void body.destroy();
      if (signal.aborted) stop();
      else signal.addEventListener('abort', stop, { once: true });
      // Servers that ignore If-Match on GetObject (s3rver does) send what is stored now: its
      // ETag tells.
      if (range?.version !== undefined && response.ETag !== range.version) {
        stop();
        return 'replaced';
      }
      // A server that ignored the Range would send the object from its first byte.
      if (range !== undefined && response.ContentRange?.startsWith(`bytes ${range.offset}-`) !== true) {
        stop();
        throw new Error(`the object store ignored the range of a read of ${key}`);
      }
      return { bytes: body, version: response.ETag };
    },
  };
}
