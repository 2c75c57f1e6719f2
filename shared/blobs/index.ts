export {
  BlobNotFoundError,
  BlobRangeError,
  checkBlobKey,
  type BlobDownload,
  type BlobEntry,
  type BlobRange,
  type BlobStore,
} from './blob-store';
export { createS3BlobStore, isS3Unavailable } from './s3';
export { createFileBlobStore } from './file-system';
export { createMemoryBlobStore } from './memory';
