import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { MultipartConfig } from '../config';
import { regroup } from './blob-store';
import type { ObjectTarget } from './s3-requests';

/** S3's limit on the parts of one upload. */
const MAX_PARTS = 10_000;
/** Tries per part: a dropped connection costs one part sent again, not the upload. */
const PART_ATTEMPTS = 4;

/**
 * Uploads exactly `size` bytes of `source` as a multipart upload: parts of `partBytes` (more
 * when 10,000 would not hold the body), `partsInFlight` of them at once, each retried on its own
 * when its request fails; then the upload is completed. On any failure (of the source, a part
 * past its retries, the completion) the upload is aborted, so S3 keeps nothing of it, and the
 * error is thrown; `isSourceError` tells the caller whose it was. Memory: about
 * (partsInFlight + 1) parts, whatever the size.
 */
export async function putMultipart(
  client: S3Client,
  target: ObjectTarget,
  key: string,
  size: number,
  source: AsyncIterable<Buffer>,
  config: MultipartConfig,
): Promise<void> {
  const partBytes = Math.max(config.partBytes, Math.ceil(size / MAX_PARTS));
  const created = await client.send(new CreateMultipartUploadCommand({ ...target, Key: key }));
  const uploadId = created.UploadId;
  if (uploadId === undefined) throw new Error(`S3 gave no upload id for ${key}`);
  const location = { Bucket: target.Bucket, Key: key, UploadId: uploadId };
  const etags: string[] = [];
  const inFlight = new Set<Promise<void>>();
  let failure: Error | undefined;

  async function uploadPart(partNumber: number, body: Buffer): Promise<void> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        const sent = await client.send(
          new UploadPartCommand({ ...location, PartNumber: partNumber, Body: body, ContentLength: body.length }),
        );
        if (sent.ETag === undefined) throw new Error(`S3 gave no ETag for part ${partNumber} of ${key}`);
        etags[partNumber - 1] = sent.ETag;
        return;
      } catch (err) {
        if (attempt >= PART_ATTEMPTS || failure !== undefined) throw err;
      }
    }
  }

  try {
    let partNumber = 0;
    for await (const part of regroup(source, partBytes)) {
      if (failure !== undefined) break;
      partNumber += 1;
      const sending: Promise<void> = uploadPart(partNumber, part)
        .catch((err: unknown) => {
          failure ??= err instanceof Error ? err : new Error(String(err));
        })
        .finally(() => inFlight.delete(sending));
      inFlight.add(sending);
      if (inFlight.size >= config.partsInFlight) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (failure !== undefined) throw failure;
    await client.send(
      new CompleteMultipartUploadCommand({
        ...location,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    );
  } catch (err) {
    failure ??= err instanceof Error ? err : new Error(String(err));
    await Promise.allSettled(inFlight);
    await client.send(new AbortMultipartUploadCommand(location)).catch(() => undefined);
    throw err;
  }
}
