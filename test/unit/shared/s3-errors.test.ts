import { expect } from 'chai';
import { isS3Unavailable } from '../../../shared/blobs';

function s3Error(status: number | undefined): Error {
  return Object.assign(new Error('s3'), { $metadata: status === undefined ? {} : { httpStatusCode: status } });
}

describe('S3 error classification', () => {
  it('treats no answer, 5xx and throttling as unavailable', () => {
    expect(isS3Unavailable(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).to.equal(true);
    for (const status of [undefined, 500, 502, 503, 429]) {
      expect(isS3Unavailable(s3Error(status)), String(status)).to.equal(true);
    }
  });

  it('does not treat client errors (missing bucket, access denied) as unavailable', () => {
    for (const status of [400, 403, 404, 409]) expect(isS3Unavailable(s3Error(status)), String(status)).to.equal(false);
    expect(isS3Unavailable('ECONNREFUSED')).to.equal(false);
  });
});
