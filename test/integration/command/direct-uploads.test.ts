import { createHash, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { FailedPreconditionError } from '../../../shared/errors';
import { createLogger } from '../../../shared/logging';
import { createDirectUploads } from '../../../services/command/application/direct-uploads';
import { createS3DirectUploads } from '../../../services/command/blobs/s3-direct-uploads';
import { createPostgresUploadRecords } from '../../../services/command/postgres/output-uploads';
import { createHarness, type Harness } from './harness';

describe('direct uploads: expiry', function () {
  this.timeout(60_000);
  let h: Harness;
  let now = new Date('2026-12-07T10:00:00Z');

  before(async () => {
    h = await createHarness();
  });
  after(async () => {
    await h?.close();
  });

  it('refuses an upload past its expiry and aborts it, once', async () => {
    await h.commands.submit({ evalId: 'up-1' });
    await h.commands.start({ evalId: 'up-1' });
    let ids = 0;
    const uploads = createDirectUploads({
      store: h.store,
      records: createPostgresUploadRecords(h.pool),
      transport: createS3DirectUploads({
        client: h.s3,
        signer: h.s3,
        bucket: h.env.config.s3.bucket,
        sse: { kind: 'none' },
      }),
      newId: () => `up-${(ids += 1)}`,
      now: () => now,
      limits: { partBytes: 64 * 1024, uploadExpirySeconds: 600, previewBytes: 16 },
      logger: createLogger('error', {}),
    });
    const output = randomBytes(100 * 1024);
    const created = await uploads.create({
      evalId: 'up-1',
      size: output.length,
      sha256: createHash('sha256').update(output).digest('hex'),
    });
    expect(created.parts.map((p) => [p.offset, p.size])).to.deep.equal([
      [0, 64 * 1024],
      [64 * 1024, 36 * 1024],
    ]);
    expect(created.expiresAt.toISOString()).to.equal('2026-12-07T10:10:00.000Z');
    const parts = created.parts.map((p) => ({ partNumber: p.partNumber, etag: 'unused' }));

    expect(await uploads.abortExpired(), 'nothing has expired yet').to.equal(0);
    now = new Date(created.expiresAt.getTime() + 1);
    const late = await uploads.finish('up-1', { uploadId: created.uploadId, parts }).catch((e: unknown) => e);
    expect(late).to.be.instanceOf(FailedPreconditionError);
    expect(late).to.include({ reason: 'UPLOAD_EXPIRED' });

    expect(await uploads.abortExpired()).to.equal(1);
    expect(await uploads.abortExpired(), 'aborted once').to.equal(0);
    const { rows } = await h.sql.query<{ state: string }>(`SELECT state FROM output_uploads WHERE upload_id = $1`, [
      created.uploadId,
    ]);
    expect(rows[0]?.state).to.equal('aborted');
  });
});
