import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import { Readable } from 'node:stream';
import { UnavailableError } from '../errors';
import {
  BlobNotFoundError,
  BlobRangeError,
  checkBlobKey,
  watchedSource,
  type BlobEntry,
  type BlobStore,
} from './blob-store';

const isMissing = (err: unknown): boolean => (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';

/** A file's version: a rename puts a new inode under the name, a rewrite in place a new mtime. */
const versionOf = (s: Stats): string => `${s.ino}-${s.mtimeMs}-${s.size}`;

/** Flushes a directory's entries (a rename is durable only once its directory is). */
async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * A blob store in a local directory. A write goes to a temporary file beside its key's (a name
 * starting with `.`, which no key has), is fsynced, renamed over the key's file, and the
 * directory fsynced: a reader sees the old object or the new one whole, a crash at any point
 * leaves the old one or the new one (and at worst a temporary file, never listed), and a
 * failed write nothing. I/O errors other than a missing file are UNAVAILABLE (a full or failing
 * disk is an outage for the caller: retry).
 */
export function createFileBlobStore(root: string): BlobStore {
  const pathOf = (key: string): string => {
    checkBlobKey(key);
    return join(root, ...key.split('/'));
  };
  const failed = (what: string, err: unknown): Error =>
    err instanceof BlobNotFoundError || err instanceof BlobRangeError
      ? err
      : new UnavailableError(`the file store failed to ${what}`, { cause: err });

  /** Writes a new file for `path` with `write`, then puts it in place atomically. */
  async function replace(path: string, write: (file: FileHandle) => Promise<void>): Promise<void> {
    const directory = dirname(path);
    await mkdir(directory, { recursive: true });
    const temporary = join(directory, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
    const file = await open(temporary, 'wx');
    try {
      try {
        await write(file);
        await file.sync();
      } finally {
        await file.close();
      }
      await rename(temporary, path);
    } catch (err) {
      await unlink(temporary).catch(() => undefined);
      throw err;
    }
    await syncDirectory(directory);
  }

  async function* walk(directory: string): AsyncGenerator<BlobEntry> {
    let names: string[];
    try {
      names = await readdir(directory);
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
    for (const name of names) {
      if (name.startsWith('.')) continue; // a write in progress
      const path = join(directory, name);
      let s: Stats;
      try {
        s = await stat(path);
      } catch (err) {
        if (isMissing(err)) continue; // deleted meanwhile
        throw err;
      }
      if (s.isDirectory()) yield* walk(path);
      else yield { key: relative(root, path).split(sep).join('/'), size: s.size, modifiedAt: s.mtime };
    }
  }

  return {
    name: 'file',
    async put(key, content) {
      const path = pathOf(key);
      try {
        await replace(path, async (file) => {
          await file.writeFile(content);
        });
      } catch (err) {
        throw failed(`write ${key}`, err);
      }
    },

    async putStream(key, size, source) {
      const path = pathOf(key);
      const watched = watchedSource(size, source);
      try {
        await replace(path, async (file) => {
          for await (const chunk of watched.bytes) await file.write(chunk);
        });
      } catch (err) {
        // The caller's own failure (its source), as it is; the disk's, as an outage.
        throw watched.failure() ?? failed(`write ${key}`, err);
      }
    },

    async open(key, signal, range) {
      const path = pathOf(key);
      let file: FileHandle;
      try {
        file = await open(path, 'r');
      } catch (err) {
        throw isMissing(err) ? new BlobNotFoundError('file', key) : failed(`read ${key}`, err);
      }
      try {
        const s = await file.stat();
        const version = versionOf(s);
        if (range?.version !== undefined && range.version !== version) {
          await file.close();
          return 'replaced';
        }
        const offset = range?.offset ?? 0;
        if (range !== undefined && offset >= s.size) throw new BlobRangeError(key, offset);
        const end = Math.min(range?.end ?? s.size, s.size);
        if (end <= offset) {
          await file.close();
          return { bytes: Readable.from([]), version };
        }
        // The handle is the file as it was opened: a replacement renamed over it meanwhile is
        // another inode, and this read goes on with the version it reported.
        const stream = file.createReadStream({ start: offset, end: end - 1, autoClose: true, signal });
        stream.on('error', () => undefined); // an abort; the consumer's iteration ends with it
        return { bytes: stream, version };
      } catch (err) {
        await file.close().catch(() => undefined);
        throw failed(`read ${key}`, err);
      }
    },

    async size(key) {
      try {
        return (await stat(pathOf(key))).size;
      } catch (err) {
        if (isMissing(err)) return undefined;
        throw failed(`stat ${key}`, err);
      }
    },

    async delete(key) {
      try {
        await unlink(pathOf(key));
      } catch (err) {
        if (!isMissing(err)) throw failed(`delete ${key}`, err);
      }
    },

    async *list(prefix) {
      // Walk only the deepest directory the prefix names in full.
      const whole = prefix.lastIndexOf('/');
      const start = whole < 0 ? root : join(root, ...prefix.slice(0, whole).split('/'));
      try {
        for await (const entry of walk(start)) if (entry.key.startsWith(prefix)) yield entry;
      } catch (err) {
        throw failed(`list ${prefix}`, err);
      }
    },
  };
}
