import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { isS3Unavailable, objectTarget, unavailableOr } from '../../../shared/blobs';
import type { ServerSideEncryption } from '../../../shared/config';
import { UploadPartsRefused, type MultipartTransport } from '../application/direct-uploads';

/**
 * Direct uploads on S3: a multipart upload per output, presigned UploadPart URLs for the
 * executor (signed with `signer`, the client for S3_PUBLIC_ENDPOINT when set), the completion
 * with the ETags it reports, and a read-back that hashes what S3 assembled.
 */
export function createS3DirectUploads(deps: {
  readonly client: S3Client;
  readonly signer: S3Client;
  readonly bucket: string;
  readonly sse: ServerSideEncryption;
}): MultipartTransport {
  const { client, bucket, sse } = deps;
  const target = objectTarget(bucket, sse);

  return {
    async create(key) {
      try {
        const created = await client.send(new CreateMultipartUploadCommand({ ...target, Key: key }));
        if (created.UploadId === undefined) throw new Error(`S3 gave no upload id for ${key}`);
        return created.UploadId;
      } catch (err) {
        throw unavailableOr(err);
      }
    },
    partUrls: (key, s3UploadId, parts, expiresIn) =>
      Promise.all(
        Array.from({ length: parts }, (_, i) =>
          getSignedUrl(
            deps.signer,
            new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: s3UploadId, PartNumber: i + 1 }),
            { expiresIn },
          ),
        ),
      ),
    async complete(key, s3UploadId, parts) {
      try {
        await client.send(
          new CompleteMultipartUploadCommand({
            Bucket: bucket,
            Key: key,
            UploadId: s3UploadId,
            MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
          }),
        );
      } catch (err) {
        if (isS3Unavailable(err)) throw unavailableOr(err);
        throw new UploadPartsRefused(err instanceof Error ? err.message : String(err), { cause: err });
      }
    },
    async abort(key, s3UploadId) {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: s3UploadId }));
    },
    async digest(key, headBytes) {
      try {
        const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        const hash = createHash('sha256');
        const head: Buffer[] = [];
        let size = 0;
        for await (const chunk of object.Body as Readable) {
          const bytes = chunk as Buffer;
          if (size < headBytes) head.push(Buffer.from(bytes.subarray(0, headBytes - size)));
          hash.update(bytes);
          size += bytes.length;
        }
        return { size, sha256: hash.digest('hex'), head: Buffer.concat(head) };
      } catch (err) {
        throw unavailableOr(err);
      }
    },
    async delete(key) {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    },
  };
}
