import { S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../config';

/**
 * Creates an S3 client from the validated config. For s3rver (and other servers without
 * aws-chunked support) the config turns checksums to WHEN_REQUIRED: with the SDK default a
 * streamed body is stored with its chunk framing, i.e. corrupted. Real S3 keeps the defaults.
 */
export function createS3Client(config: S3Config): S3Client {
  return new S3Client({
    region: config.region,
    ...(config.endpoint !== '' ? { endpoint: config.endpoint } : {}),
    forcePathStyle: config.forcePathStyle,
    requestChecksumCalculation: config.checksumMode,
    responseChecksumValidation: config.checksumMode,
    ...(config.accessKeyId !== ''
      ? { credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey } }
      : {}),
    // Fail fast when the S3 server is down: the command answers UNAVAILABLE and the executor retries.
    maxAttempts: 2,
  });
}
