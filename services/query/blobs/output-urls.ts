import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { OutputUrls } from '../handlers/get-output-url';

/**
 * Presigned GETs of the configured bucket's objects. Signing is local (no request is sent), so
 * `client` may be one made for the public endpoint clients reach S3 by (S3_PUBLIC_ENDPOINT),
 * which this process never talks to.
 */
export function createS3OutputUrls(client: S3Client, bucket: string): OutputUrls {
  return {
    sign: (key, expiresInSeconds) =>
      getSignedUrl(client, new GetObjectCommand({ Bucket: bucket, Key: key }), { expiresIn: expiresInSeconds }),
  };
}
