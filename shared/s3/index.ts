export { createS3Client, observeS3Requests, type S3ClientOptions } from './client';
