import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  NoSuchKey,
  NotFound,
  PutObjectCommand,
  type GetObjectCommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { defaultMultipart, type MultipartConfig, type ServerSideEncryption } from '../config';
import { UnavailableError } from '../errors';
import {
  BlobNotFoundError,
  BlobRangeError,
  checkBlobKey,
  watchedSource,
  type BlobEntry,
  type BlobRange,
  type BlobStore,
} from './blob-store';
import { putMultipart } from './s3-multipart';
import { httpStatusOf, objectTarget, unavailableOr, type ObjectTarget } from './s3-requests';

/** The HTTP Range of `range`: its end is exclusive, the header's inclusive. */
function rangeHeader(range: BlobRange): string {
  return `bytes=${range.offset}-${range.end !== undefined ? range.end - 1 : ''}`;
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

/**
 * Bodies in `bucket`, streamed both ways (never held whole). Every write asks for `sse`
 * (S3_SSE): encryption at rest is then the store's, whatever the bucket's default says.
 */
export function createS3BlobStore(
  client: S3Client,
  bucket: string,
  sse: ServerSideEncryption = { kind: 'none' },
  multipart: MultipartConfig = defaultMultipart(),
): BlobStore {
  const target = objectTarget(bucket, sse);
  /**
   * Removes what a server kept of a PutObject cut short. s3rver goes on storing an aborted
   * request's body and writes the object's metadata when the body ends, which can be after a
   * DeleteObject sent at once: the key then comes back. So the key is deleted until two reads
   * in a row find it gone (a few round trips at most; S3 itself finds it gone the first time).
   */
  const removeCutShort = async (key: string): Promise<void> => {
    let absentInARow = 0;
    for (let attempt = 0; attempt < 10 && absentInARow < 2; attempt += 1) {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })).catch(() => undefined);
      const present = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).then(
        () => true,
        (err: unknown) => httpStatusOf(err) !== 404,
      );
      absentInARow = present ? 0 : absentInARow + 1;
    }
  };

  return {
    name: 's3',
    async put(key, content, sha256Hex) {
      checkBlobKey(key);
      try {
        await client.send(putObject(target, key, content, sha256Hex));
      } catch (err) {
        throw unavailableOr(err);
      }
    },

    async putStream(key, size, source) {
      checkBlobKey(key);
      // A source that throws, or holds more or fewer bytes than `size`, ends the request (the
      // SDK would otherwise wait for the rest of ContentLength), and its error, not the
      // abort's, is what the caller hears.
      const abort = new AbortController();
      const watched = watchedSource(size, source, () => abort.abort());
      if (size > multipart.thresholdBytes) {
        // In parts, several at once: past 5 GiB (one PutObject's limit), and faster before.
        try {
          await putMultipart(client, target, key, size, watched.bytes, multipart);
          return;
        } catch (err) {
          throw watched.failure() ?? unavailableOr(err);
        }
      }
      const body = Readable.from(watched.bytes, { objectMode: false });
      body.on('error', () => undefined); // reported through watched.failure()
      try {
        // A stream body is sent with an UNSIGNED-PAYLOAD signature: the service hashes it on the way.
        await client.send(new PutObjectCommand({ ...target, Key: key, Body: body, ContentLength: size }), {
          abortSignal: abort.signal,
        });
      } catch (err) {
        const sourceError = watched.failure();
        if (sourceError === undefined) throw unavailableOr(err);
        // S3 stores nothing of a PutObject cut short, but not every S3 server is so careful
        // (s3rver keeps what it got): the key is this upload's own, so removing it is safe.
        await removeCutShort(key);
        throw sourceError;
      } finally {
        body.destroy();
      }
    },

    async open(key, signal, range) {
      checkBlobKey(key);
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
        if (err instanceof NoSuchKey) throw new BlobNotFoundError('s3', key);
        // 412: If-Match failed. 416: the range starts past the end (another object, if pinned).
        const status = httpStatusOf(err);
        if (range?.version !== undefined && (status === 412 || status === 416)) return 'replaced';
        if (range !== undefined && status === 416) throw new BlobRangeError(key, range.offset);
        throw new UnavailableError('the output store (S3) is unavailable', { cause: err });
      }
      // In Node the SDK's body is an IncomingMessage (a Readable): async-iterable, paused
      // while the consumer awaits.
      const body = response.Body as Readable | undefined;
      if (body === undefined) throw new Error(`the object store returned no body for ${key}`);
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

    async size(key) {
      checkBlobKey(key);
      try {
        const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
        return head.ContentLength ?? 0;
      } catch (err) {
        if (err instanceof NotFound || err instanceof NoSuchKey || httpStatusOf(err) === 404) return undefined;
        throw unavailableOr(err);
      }
    },

    async delete(key) {
      checkBlobKey(key);
      try {
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      } catch (err) {
        throw unavailableOr(err);
      }
    },

    async *list(prefix): AsyncGenerator<BlobEntry> {
      let token: string | undefined;
      do {
        let page;
        try {
          page = await client.send(
            new ListObjectsV2Command({
              Bucket: bucket,
              Prefix: prefix,
              ...(token !== undefined ? { ContinuationToken: token } : {}),
            }),
          );
        } catch (err) {
          throw unavailableOr(err);
        }
        for (const object of page.Contents ?? []) {
          if (object.Key === undefined) continue;
          yield { key: object.Key, size: object.Size ?? 0, modifiedAt: object.LastModified ?? new Date(0) };
        }
        token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
      } while (token !== undefined);
    },
  };
}
