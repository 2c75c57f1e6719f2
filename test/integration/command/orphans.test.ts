import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { createFileBlobStore, createS3BlobStore, type BlobStore as Store } from '../../../shared/blobs';
import { sweepAllOrphans } from '../../../services/command/application/orphan-sweeper';
import { createPostgresBlobReferences } from '../../../services/command/postgres/blob-references';
import { createHarness, type Harness } from './harness';

const run = promisify(execFile);

async function keys(store: Store): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of store.list('')) found.push(entry.key);
  return found.sort();
}

describe('orphan sweep: blobs no row refers to', function () {
  this.timeout(60_000);
  let h: Harness;
  let dir: string;
  let s3: Store;
  let file: Store;

  before(async () => {
    h = await createHarness({ INLINE_OUTPUT_MAX_BYTES: '1024' });
    dir = await mkdtemp(join(tmpdir(), 'crucible-orphans-'));
    s3 = createS3BlobStore(h.s3, h.env.config.s3.bucket);
    file = createFileBlobStore(dir);
  });
  after(async () => {
    await h?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('deletes what no row names once it is older than the grace, keeps the rest, and a dry run deletes nothing', async () => {
    await h.commands.submit({ evalId: 'orph-1' });
    await h.commands.complete({ evalId: 'orph-1', output: randomBytes(4000), exitCode: 0 });
    const { rows } = await h.sql.query<{ s3_key: string }>(
      `SELECT s3_key FROM evaluation_bodies WHERE eval_id = 'orph-1' AND kind = 'output'`,
    );
    const kept = rows[0]?.s3_key ?? '';
    // An upload whose command failed; a key outside the service's prefix (someone else's).
    await s3.put('evaluations/orph-x/output/abc', Buffer.from('orphan'));
    await s3.put('not-ours/thing', Buffer.from('theirs'));
    // A fallback copy of a blob that was moved (its row says S3), and one that has not moved.
    await file.put(kept, Buffer.from('left after the move'));
    await h.sql.query(
      `INSERT INTO evaluation_bodies (eval_id, kind, size, s3_key, blob_store)
       VALUES ('orph-1', 'error', 7, 'evaluations/orph-1/error/waiting', 'file')`,
    );
    await file.put('evaluations/orph-1/error/waiting', Buffer.from('waiting'));

    const references = createPostgresBlobReferences(h.pool);
    const homes = { s3, file };
    const young = await sweepAllOrphans({ homes, references, graceMs: 3_600_000, now: new Date(), dryRun: false });
    expect(
      young.map((r) => r.orphans.length),
      'nothing is old enough',
    ).to.deep.equal([0, 0]);

    const later = new Date(Date.now() + 60_000);
    const dry = await sweepAllOrphans({ homes, references, graceMs: 1000, now: later, dryRun: true });
    expect(dry.map((r) => [r.home, r.orphans.map((o) => o.key)])).to.deep.equal([
      ['s3', ['evaluations/orph-x/output/abc']],
      ['file', [kept]],
    ]);
    expect(await keys(s3)).to.include('evaluations/orph-x/output/abc');

    const swept = await sweepAllOrphans({ homes, references, graceMs: 1000, now: later, dryRun: false });
    expect(swept.map((r) => r.orphans.length)).to.deep.equal([1, 1]);
    expect(await keys(s3)).to.deep.equal([kept, 'not-ours/thing'].sort());
    expect(await keys(file)).to.deep.equal(['evaluations/orph-1/error/waiting']);
  });

  it('runs as `npm run sweep-orphans -- --dry-run`, printing what it would delete', async () => {
    await s3.put('evaluations/orph-cli/output/def', Buffer.from('orphan'));
    const { stdout } = await run(
      process.execPath,
      [
        join(__dirname, '..', '..', '..', 'services', 'command', 'cli', 'sweep-orphans.js'),
        '--dry-run',
        '--grace-seconds',
        '0',
      ],
      { env: { ...process.env, ...h.env.env, BLOB_FALLBACK_DIR: dir } },
    );
    expect(stdout).to.include('would delete s3:evaluations/orph-cli/output/def 6 B');
    expect(stdout).to.match(/s3: \d+ blobs examined, 1 orphans \(6 B\), dry run: nothing deleted/);
    expect(await keys(s3)).to.include('evaluations/orph-cli/output/def');
  });
});
