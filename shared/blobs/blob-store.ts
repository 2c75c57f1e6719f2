/**
 * Where large bytes live (outputs, errors and code above their inline limits), behind one
 * contract that every implementation passes (test/integration/blobs/contract.test.ts): S3
 * (s3.ts), the local file system (file-system.ts) and memory (memory.ts, for tests).
 *
 * Keys are `/`-separated paths of non-empty segments that do not start with `.` (a store may
 * keep its own files under such names). An object is written whole or not at all: a reader
 * never sees part of a write, and a failed write leaves nothing under its key.
 */
export interface BlobStore {
  /** What the store is, for messages and logs ("s3", "file", "memory"). */
  readonly name: string;
  /** Stores `content` under `key`, replacing what was there. `sha256Hex`, when given, spares a store that signs uploads hashing again. */
  put(key: string, content: Buffer, sha256Hex?: string): Promise<void>;
  /**
   * Stores exactly `size` bytes read from `source` as they come (nothing is held whole). Fails,
   * leaving no part of them under `key`, when `source` throws or yields more or fewer bytes than
   * `size`. Give it a key of the upload's own: after a failure the key may hold nothing at all,
   * not even what was there before (see the S3 store).
   */
  putStream(key: string, size: number, source: AsyncIterable<Buffer>): Promise<void>;
  /**
   * The object's bytes as a stream, with the version they are of; aborting `signal` stops the
   * read and frees what it holds at once. With `range`, the bytes from `range.offset` up to
   * `range.end` (exclusive; the object's end when absent or past it), of the version
   * `range.version` only when it is given: 'replaced' when the object is no longer that version.
   * Rejects with {@link BlobNotFoundError} when there is no such object, and with
   * {@link BlobRangeError} when `range.offset` is not inside it.
   */
  open(key: string, signal: AbortSignal, range?: BlobRange): Promise<BlobDownload | 'replaced'>;
  /** The object's size, or undefined when there is none. */
  size(key: string): Promise<number | undefined>;
  /** Removes an object; absent already is fine. */
  delete(key: string): Promise<void>;
  /** Every object whose key starts with `prefix`, in no particular order. */
  list(prefix: string): AsyncIterable<BlobEntry>;
}

export interface BlobRange {
  readonly offset: number;
  readonly end?: number;
  readonly version?: string;
}

export interface BlobDownload {
  readonly bytes: AsyncIterable<Uint8Array>;
  /** The version the bytes are of; undefined when the store gives none (then a read cannot be resumed). */
  readonly version: string | undefined;
}

export interface BlobEntry {
  readonly key: string;
  readonly size: number;
  readonly modifiedAt: Date;
}

/** No object under the key. A body row that names a missing object is lost data: INTERNAL. */
export class BlobNotFoundError extends Error {
  constructor(store: string, key: string) {
    super(`object ${key} is missing from the ${store} store`);
    this.name = 'BlobNotFoundError';
  }
}

/** A range that starts at or past the object's end. */
export class BlobRangeError extends Error {
  constructor(key: string, offset: number) {
    super(`offset ${offset} is not inside object ${key}`);
    this.name = 'BlobRangeError';
  }
}

const SEGMENT = /^[^./\\\0][^/\\\0]*$/;

/** Throws unless `key` is a store key (see {@link BlobStore}): it is a path under a store's root. */
export function checkBlobKey(key: string): void {
  if (key.length === 0 || key.length > 1024 || !key.split('/').every((segment) => SEGMENT.test(segment))) {
    throw new Error(`not a blob key: ${JSON.stringify(key)}`);
  }
}

/**
 * `source`, checked to hold exactly `size` bytes: it throws at the first byte past `size`, or
 * at its end when it fell short, so that a store never keeps a body of another size.
 */
export async function* exactly(size: number, source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let seen = 0;
  for await (const chunk of source) {
    seen += chunk.length;
    if (seen > size) throw new Error(`the body is longer than the ${size} bytes declared`);
    yield chunk;
  }
  if (seen !== size) throw new Error(`the body ended after ${seen} of the ${size} bytes declared`);
}

/**
 * {@link exactly}, remembering how it failed: a store that sees its write fail can tell the
 * caller's own failure (its source: re-thrown as it is) from the store's (an outage).
 * `onFailure` runs at once (the S3 store aborts its request there).
 */
export function watchedSource(
  size: number,
  source: AsyncIterable<Buffer>,
  onFailure: () => void = () => undefined,
): { readonly bytes: AsyncGenerator<Buffer>; failure(): Error | undefined } {
  let failure: Error | undefined;
  async function* bytes(): AsyncGenerator<Buffer> {
    try {
      yield* exactly(size, source);
    } catch (err) {
      failure = err instanceof Error ? err : new Error(String(err));
      onFailure();
      throw err;
    }
  }
  return { bytes: bytes(), failure: () => failure };
}

/**
 * Regroups a byte stream into Buffers of `size` bytes (the last one shorter), copying each byte
 * once. Each Buffer is a new one from `allocate`: the one handed out may still be in use (queued
 * for the wire, or an upload in flight), and a caller can allocate with room of its own around it.
 */
export async function* regroup(
  source: AsyncIterable<Uint8Array>,
  size: number,
  allocate: (size: number) => Buffer = (n) => Buffer.allocUnsafe(n),
): AsyncGenerator<Buffer> {
  let chunk: Buffer | undefined;
  let filled = 0;
  for await (const part of source) {
    let at = 0;
    while (at < part.byteLength) {
      chunk ??= allocate(size);
      const take = Math.min(size - filled, part.byteLength - at);
      chunk.set(part.subarray(at, at + take), filled);
      filled += take;
      at += take;
      if (filled === size) {
        yield chunk;
        chunk = undefined;
        filled = 0;
      }
    }
  }
  if (chunk !== undefined) yield chunk.subarray(0, filled);
}
