import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { CpuUse } from '../support/cpu';

/**
 * Floor for output transfer: raw @aws-sdk/client-s3 PutObject and GetObject of the same bytes
 * (the client from shared/s3: forcePathStyle and WHEN_REQUIRED checksums for s3rver).
 * Resolves with the seconds each took and the CPU it used (`measure` starts a measurement); the
 * object is read back whole and compared.
 */
export async function rawS3Transfer(
  s3: S3Client,
  bucket: string,
  key: string,
  body: Buffer,
  measure: () => { stop(): CpuUse },
): Promise<{ putSeconds: number; getSeconds: number; putCpu: CpuUse; getCpu: CpuUse }> {
  const putMeasure = measure();
  const putStart = performance.now();
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentLength: body.length }));
  const putSeconds = (performance.now() - putStart) / 1000;
  const putCpu = putMeasure.stop();
  const getMeasure = measure();
  const getStart = performance.now();
  const response = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const chunks: Buffer[] = [];
  for await (const chunk of response.Body as AsyncIterable<Buffer>) chunks.push(chunk);
  const getSeconds = (performance.now() - getStart) / 1000;
  const getCpu = getMeasure.stop();
  const read = Buffer.concat(chunks);
  if (!read.equals(body))
    throw new Error(`S3 returned ${read.length} bytes that differ from the ${body.length} written`);
  return { putSeconds, getSeconds, putCpu, getCpu };
}
