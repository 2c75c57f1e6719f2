import { BlobNotFoundError, type BlobStore } from '../../../shared/blobs';
import type { BlobHome } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import type { BlobReader, BlobReaders } from '../handlers/read-output';

const IN_FALLBACK =
  "is kept in the command service's fallback store until S3 answers again, and that store cannot be read here; read again once it has moved";

/**
 * Reads of S3, and of the fallback file store (BLOB_FALLBACK_DIR) when this replica can reach
 * it (the command service's directory, shared or on the same host). A blob in a fallback store
 * this replica cannot read is UNAVAILABLE, not lost: the command service moves it to S3.
 */
export function createBlobReaders(s3: BlobStore, fallback: BlobStore | undefined): BlobReaders {
  const unreachable: BlobReader = {
    open: (key) => Promise.reject(new UnavailableError(`${key} ${IN_FALLBACK}`)),
  };
  const file: BlobReader =
    fallback === undefined
      ? unreachable
      : {
          async open(key, signal, range) {
            try {
              return await fallback.open(key, signal, range);
            } catch (err) {
              // Not here: on another host, or moved (and deleted) since the row was read.
              if (err instanceof BlobNotFoundError) throw new UnavailableError(`${key} ${IN_FALLBACK}`, { cause: err });
              throw err;
            }
          },
        };
  return (home: BlobHome) => (home === 'file' ? file : s3);
}
