import { GetObjectCommand, NoSuchKey, type S3Client } from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { UnavailableError } from '../../../shared/errors';
import type { BlobReader } from '../handlers/read-output';

/** Large bodies from the configured bucket, streamed (never loaded whole). */
export function createS3BlobReader(client: S3Client, bucket: string): BlobReader {
  return {
    async open(key, signal) {
      let body: unknown;
      try {
        const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
        body = response.Body;
      } catch (err) {
        // A missing object behind a committed row is a bug or lost data, not an outage: INTERNAL.
        if (err instanceof NoSuchKey)
          throw new Error(`stored body ${key} is missing from the object store`, { cause: err });
        throw new UnavailableError('the output store is unavailable', { cause: err });
      }
      if (body === undefined) throw new Error(`object store returned no body for ${key}`);
      // In Node the SDK's body is an IncomingMessage (a Readable): async-iterable, paused
      // while the consumer awaits.
      return body as Readable;
    },
  };
}
