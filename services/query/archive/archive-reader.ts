import { createHash } from 'node:crypto';
import { decodeArchive, type EvaluationArchive } from '../../../shared/archive';
import { unavailableOr, type BlobStore } from '../../../shared/blobs';

/** The S3 archive of evaluations that left PostgreSQL (shared/archive), as the query side reads it. */
export interface ArchiveReader {
  /**
   * The archive at `key` whose object has the SHA-256 `sha256` (archived_evaluations says which);
   * rejects UNAVAILABLE while S3 is down, INTERNAL when it is missing.
   */
  read(key: string, sha256: string): Promise<EvaluationArchive>;
}

/** Archives kept decoded: a client paging an archived evaluation's events reads one object once. */
const CACHED = 32;

/**
 * Reads an archive whole (one evaluation: its events, inline bodies and metric points), checks
 * it against the digest recorded with it, and keeps the last few decoded (keyed by key and
 * digest: an object written over is never served from the cache).
 */
export function createArchiveReader(store: Pick<BlobStore, 'open'>): ArchiveReader {
  const cache = new Map<string, Promise<EvaluationArchive>>();
  async function fetch(key: string, sha256: string): Promise<EvaluationArchive> {
    const download = await store.open(key, new AbortController().signal);
    // Unreachable: no version is asked for.
    if (download === 'replaced') throw new Error(`archive ${key} changed while it was read`);
    const parts: Buffer[] = [];
    try {
      for await (const part of download.bytes) parts.push(Buffer.from(part));
    } catch (err) {
      // The connection failed half-way (open() maps only the failures before the body).
      throw unavailableOr(err);
    }
    const bytes = Buffer.concat(parts);
    // Not what was archived (replaced, truncated): lost data, INTERNAL, never served.
    if (createHash('sha256').update(bytes).digest('hex') !== sha256)
      throw new Error(`archive ${key} does not match the SHA-256 recorded when it was written`);
    return decodeArchive(bytes);
  }
  return {
    read(key, sha256) {
      const version = `${key}#${sha256}`;
      const cached = cache.get(version);
      if (cached !== undefined) {
        cache.delete(version);
        cache.set(version, cached);
        return cached;
      }
      const reading = fetch(key, sha256);
      cache.set(version, reading);
      // A failed read is not kept: the next one tries S3 again.
      reading.catch(() => cache.delete(version));
      while (cache.size > CACHED) cache.delete(cache.keys().next().value as string);
      return reading;
    },
  };
}
