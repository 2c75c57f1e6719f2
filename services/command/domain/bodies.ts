import { createHash } from 'node:crypto';
import type { BlobHome, BodyKind, BodyRef, LogStream } from '../../../shared/domain';

/** Where a body will be stored; decided before the transaction so a large one is uploaded first. */
export type BodyPlan =
  | { readonly ref: BodyRef; readonly storage: 'none' }
  | { readonly ref: BodyRef; readonly storage: 'postgres'; readonly content: Buffer }
  | {
      readonly ref: BodyRef;
      readonly storage: 's3';
      readonly content: Buffer;
      readonly key: string;
      /** The content's {@link contentDigest}: S3 can sign the upload with it instead of hashing again. */
      readonly digest: string;
    }
  /** Stored already (a streamed completion, in `home`): only the reference is written. */
  | { readonly ref: BodyRef; readonly storage: 'uploaded'; readonly key: string; readonly home: BlobHome };

/**
 * An output stored in S3 as it streamed in, before the command is decided: what the command
 * needs of it. A class, so that nothing a client sends (metadata is arbitrary JSON) can pass
 * for one.
 */
export class UploadedOutput {
  constructor(
    readonly key: string,
    readonly size: number,
    /** Hex SHA-256 of the bytes: the command hash counts the output by it, as for a Buffer. */
    readonly digest: string,
    /** The output's first bytes, at least as many as the preview keeps. */
    readonly head: Buffer,
    /** Which store took it: S3, or the fallback while S3 was unreachable. */
    readonly home: BlobHome = 's3',
    /**
     * Whether the command owns the object, and deletes it when it does not keep it (a streamed
     * completion's upload, under a key of its own); a direct upload stays for a retry.
     */
    readonly disposable: boolean = true,
  ) {}
}

/** How a body's hex SHA-256 is obtained: {@link contentDigest}, or a memo of it. */
export type Digest = (content: Buffer) => string;

/**
 * Hex SHA-256 of a body. It names the body's S3 object, stands for the body in the command
 * hash and is the payload hash S3's request signature needs, so a caller that holds a large
 * body computes it once (see {@link memoizeDigest}) and hands it to all three.
 */
export function contentDigest(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

/** {@link contentDigest} that hashes each distinct Buffer once (for one command's bodies). */
export function memoizeDigest(): Digest {
  const digests = new WeakMap<Buffer, string>();
  return (content) => {
    let digest = digests.get(content);
    if (digest === undefined) {
      digest = contentDigest(content);
      digests.set(content, digest);
    }
    return digest;
  };
}

export interface BodyLimits {
  readonly previewBytes: number;
  readonly inlineOutputMaxBytes: number;
  readonly inlineCodeMaxBytes: number;
}

/** The first `max` bytes of a UTF-8 text, cut back to a character boundary. */
export function utf8Prefix(bytes: Buffer, max: number): Buffer {
  if (bytes.length <= max) return bytes;
  let end = max;
  // Step back over continuation bytes (10xxxxxx) so the cut never splits a character.
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end -= 1;
  return bytes.subarray(0, end);
}

/**
 * An error's preview is text (a PostgreSQL text column and a proto string): U+0000, which a
 * crashed program's stderr may well contain, becomes U+FFFD there. The whole body keeps the
 * exact bytes.
 */
function errorPreview(content: Buffer, max: number): Buffer {
  const prefix = utf8Prefix(content, max);
  return prefix.includes(0) ? Buffer.from(prefix.toString('utf8').replaceAll('\u0000', '\uFFFD'), 'utf8') : prefix;
}

/**
 * Plans how a body is kept: nothing when empty, in PostgreSQL up to the inline limit, in S3
 * above it under a key derived from the content, so that a retried upload writes the same
 * object and two racing commands with different bodies never overwrite each other's.
 * `digest` lets the caller share one hash of the body with the command hash. An output already
 * uploaded is kept where it is.
 */
export function planBody(
  evalId: string,
  kind: BodyKind | LogStream,
  content: Buffer | UploadedOutput,
  limits: BodyLimits,
  digest: Digest = contentDigest,
): BodyPlan {
  if (content instanceof UploadedOutput) {
    const previewBase64 = content.head.subarray(0, limits.previewBytes).toString('base64');
    return {
      ref: { previewBase64, size: content.size, location: content.home, s3Key: content.key },
      storage: 'uploaded',
      key: content.key,
      home: content.home,
    };
  }
  const preview =
    kind === 'error' ? errorPreview(content, limits.previewBytes) : content.subarray(0, limits.previewBytes);
  const base = { previewBase64: preview.toString('base64'), size: content.length };
  if (content.length === 0) return { ref: { ...base, location: '' }, storage: 'none' };
  const inlineMax = kind === 'code' ? limits.inlineCodeMaxBytes : limits.inlineOutputMaxBytes;
  if (content.length <= inlineMax) {
    return { ref: { ...base, location: 'postgres' }, storage: 'postgres', content };
  }
  const hex = digest(content);
  const key = `evaluations/${evalId}/${kind}/${hex}`;
  return { ref: { ...base, location: 's3', s3Key: key }, storage: 's3', content, key, digest: hex };
}

/**
 * The plan of a body that was to go to S3 and went to `home` instead (the fallback store, S3
 * being unreachable): stored already, where the reference must say it is.
 */
export function relocatedPlan(plan: Extract<BodyPlan, { storage: 's3' }>, home: BlobHome): BodyPlan {
  return { ref: { ...plan.ref, location: home }, storage: 'uploaded', key: plan.key, home };
}
