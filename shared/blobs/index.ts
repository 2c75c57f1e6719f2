export {
  BlobNotFoundError,
  BlobRangeError,
  checkBlobKey,
  regroup,
  type BlobDownload,
  type BlobEntry,
  type BlobRange,
  type BlobStore,
} from './blob-store';
export { createS3BlobStore } from './s3';
export { isS3Unavailable, objectTarget, unavailableOr } from './s3-requests';
export { createFileBlobStore } from './file-system';
export { createMemoryBlobStore } from './memory';
