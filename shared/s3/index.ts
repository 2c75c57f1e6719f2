export { createS3Client } from './client';
