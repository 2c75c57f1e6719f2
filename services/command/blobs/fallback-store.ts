import type { BlobStore as Store } from '../../../shared/blobs';
import type { BlobHome } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import type { Logger } from '../../../shared/logging';
import type { BlobStore } from '../application/ports';

export interface FallbackStoreDeps {
  /** S3. */
  readonly primary: Store;
  /** The file store under BLOB_FALLBACK_DIR; undefined: no fallback (S3 down is UNAVAILABLE). */
  readonly fallback: Store | undefined;
  /** After S3 failed, writes go straight to the fallback this long before S3 is tried again. */
  readonly retryPrimaryAfterMs: number;
  readonly now: () => number;
  readonly logger: Logger;
}

/**
 * The command side's blob writes: to S3, or, when S3 cannot be reached and a fallback store is
 * configured, to the local file store, saying which (the row records it, and the mover copies
 * the blob to S3 later: application/blob-mover.ts). After a failure S3 is left alone for
 * `retryPrimaryAfterMs`, so that an outage costs each write one fast local write, not a
 * connect timeout first. A streamed write goes where the last outcome points: its bytes
 * cannot be sent twice, so a stream that S3 fails part-way is UNAVAILABLE (the client sends it
 * again, then to the fallback).
 */
export function createFallbackStore(deps: FallbackStoreDeps): BlobStore {
  const { primary, fallback, logger } = deps;
  let primaryDownUntil = 0;
  const primaryDown = (): boolean => fallback !== undefined && deps.now() < primaryDownUntil;
  const storeOf = (home: BlobHome): Store => (home === 'file' && fallback !== undefined ? fallback : primary);

  function markDown(err: unknown): void {
    if (fallback === undefined || !(err instanceof UnavailableError)) return;
    if (!primaryDown()) logger.warn('S3 is unreachable: writing large bodies to the fallback store', { err });
    primaryDownUntil = deps.now() + deps.retryPrimaryAfterMs;
  }

  return {
    async put(key, content, sha256Hex) {
      if (!primaryDown()) {
        try {
          await primary.put(key, content, sha256Hex);
          return 's3';
        } catch (err) {
          markDown(err);
          if (fallback === undefined || !(err instanceof UnavailableError)) throw err;
        }
      }
      await (fallback as Store).put(key, content);
      return 'file';
    },
    async putStream(key, size, source) {
      const home: BlobHome = primaryDown() ? 'file' : 's3';
      try {
        await storeOf(home).putStream(key, size, source);
      } catch (err) {
        if (home === 's3') markDown(err);
        throw err;
      }
      return home;
    },
    delete: (key, home) => storeOf(home).delete(key),
  };
}
