import { BlobNotFoundError, BlobRangeError, checkBlobKey, exactly, type BlobEntry, type BlobStore } from './blob-store';

interface StoredObject {
  readonly bytes: Buffer;
  readonly version: string;
  readonly modifiedAt: Date;
}

/** What a read yields at a time, as a socket would: an aborted read stops between pieces. */
const PIECE_BYTES = 64 * 1024;

/** `bytes` in pieces, each a turn later, until `signal` is aborted. */
async function* pieces(bytes: Buffer, signal: AbortSignal): AsyncGenerator<Buffer> {
  for (let at = 0; at < bytes.length && !signal.aborted; at += PIECE_BYTES) {
    await Promise.resolve();
    yield bytes.subarray(at, at + PIECE_BYTES);
  }
}

/** A blob store in this process's memory: for tests, and nothing that must outlive the process. */
export function createMemoryBlobStore(): BlobStore {
  const objects = new Map<string, StoredObject>();
  let versions = 0;
  const store = (key: string, bytes: Buffer): void => {
    versions += 1;
    objects.set(key, { bytes, version: `m${versions}`, modifiedAt: new Date() });
  };

  return {
    name: 'memory',
    // eslint-disable-next-line @typescript-eslint/require-await -- a bad key rejects, as in every store
    async put(key, content) {
      checkBlobKey(key);
      store(key, Buffer.from(content));
    },
    async putStream(key, size, source) {
      checkBlobKey(key);
      const parts: Buffer[] = [];
      for await (const chunk of exactly(size, source)) parts.push(Buffer.from(chunk));
      store(key, Buffer.concat(parts));
    },
    // eslint-disable-next-line @typescript-eslint/require-await -- a bad key rejects, as in every store
    async open(key, signal, range) {
      checkBlobKey(key);
      const found = objects.get(key);
      if (found === undefined) throw new BlobNotFoundError('memory', key);
      if (range?.version !== undefined && range.version !== found.version) return 'replaced';
      const offset = range?.offset ?? 0;
      if (range !== undefined && offset >= found.bytes.length) throw new BlobRangeError(key, offset);
      const bytes = found.bytes.subarray(offset, Math.min(range?.end ?? Infinity, found.bytes.length));
      return { bytes: pieces(bytes, signal), version: found.version };
    },
    // eslint-disable-next-line @typescript-eslint/require-await -- a bad key rejects, as in every store
    async size(key) {
      checkBlobKey(key);
      return objects.get(key)?.bytes.length;
    },
    // eslint-disable-next-line @typescript-eslint/require-await -- a bad key rejects, as in every store
    async delete(key) {
      checkBlobKey(key);
      objects.delete(key);
    },
    // eslint-disable-next-line @typescript-eslint/require-await -- an async iterable, as in every store
    async *list(prefix): AsyncGenerator<BlobEntry> {
      for (const [key, object] of [...objects]) {
        if (key.startsWith(prefix)) yield { key, size: object.bytes.length, modifiedAt: object.modifiedAt };
      }
    },
  };
}
