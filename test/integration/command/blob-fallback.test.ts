import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { createFileBlobStore, createS3BlobStore, type BlobStore as Store } from '../../../shared/blobs';
import { UnavailableError } from '../../../shared/errors';
import { createLogger } from '../../../shared/logging';
import { createS3Client } from '../../../shared/s3';
import { createBlobMover } from '../../../services/command/application/blob-mover';
import type { Command } from '../../../services/command/domain';
import { createFallbackStore } from '../../../services/command/blobs/fallback-store';
import { createPostgresFallbackBlobs } from '../../../services/command/postgres/fallback-blobs';
import type { LogChunkIn } from '../../../services/command/application/log-appender';
import { commandsOf, createHarness, denseLog, eventsOf, type Harness } from './harness';

const silent = createLogger('error', {});

function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function* chunks(offset: number, data: Buffer): AsyncGenerator<LogChunkIn> {
  await Promise.resolve();
  yield { offset, data };
}

describe('command executor: blobs written to the fallback store while S3 is down, moved back by the mover', function () {
  this.timeout(60_000);
  let h: Harness;
  let dir: string;
  let fallback: Store;
  let s3: Store;

  before(async () => {
    h = await createHarness({ INLINE_OUTPUT_MAX_BYTES: '1024' });
    dir = await mkdtemp(join(tmpdir(), 'crucible-fallback-it-'));
    fallback = createFileBlobStore(dir);
    s3 = createS3BlobStore(h.s3, h.env.config.s3.bucket);
  });
  after(async () => {
    await h?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function downExecutor() {
    const down = createS3Client({ ...h.env.config.s3, endpoint: `http://127.0.0.1:${await closedPort()}` });
    const blobs = createFallbackStore({
      primary: createS3BlobStore(down, h.env.config.s3.bucket),
      fallback,
      retryPrimaryAfterMs: 60_000,
      now: Date.now,
      logger: silent,
    });
    return { executor: h.executorWith({ blobs }), close: () => down.destroy() };
  }

  function mover(execute: (command: Command) => Promise<unknown> = (c) => h.executor.execute(c)) {
    return createBlobMover({
      blobs: createPostgresFallbackBlobs(h.pool),
      primary: s3,
      fallback,
      execute: execute as never,
      intervalMs: 60_000,
      logger: silent,
    });
  }

  async function homes(evalId: string): Promise<string[]> {
    const { rows } = await h.sql.query<{ what: string }>(
      `SELECT kind || ':' || blob_store AS what FROM evaluation_bodies WHERE eval_id = $1 AND s3_key IS NOT NULL
       UNION ALL
       SELECT stream || '@' || start_offset || ':' || blob_store FROM evaluation_log_segments
        WHERE eval_id = $1 AND s3_key IS NOT NULL
       ORDER BY 1`,
      [evalId],
    );
    return rows.map((r) => r.what);
  }

  async function s3Bytes(key: string): Promise<Buffer> {
    const object = await h.s3.send(new GetObjectCommand({ Bucket: h.env.config.s3.bucket, Key: key }));
    return Buffer.from(await (object.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
  }

  it('accepts a large output and a large log segment with S3 down, and the mover puts both in S3, once', async () => {
    const down = await downExecutor();
    const output = randomBytes(5000);
    const log = randomBytes(3000);
    try {
      const commands = commandsOf(down.executor, h.env.config.limits);
      await commands.submit({ evalId: 'fb-1' });
      await commands.start({ evalId: 'fb-1' });
      await down.executor.appendLogs({ evalId: 'fb-1', stream: 'stdout' }, chunks(0, log));
      await commands.complete({ evalId: 'fb-1', output, exitCode: 0 });
    } finally {
      down.close();
    }
    expect(await homes('fb-1')).to.deep.equal(['output:file', 'stdout@0:file']);
    const completed = (await eventsOf(h.sql, 'fb-1')).find((e) => e.event_type === 'EvaluationCompleted');
    expect((completed?.data as { output: { location: string } }).output.location).to.equal('file');

    expect(await mover().sweep()).to.equal(2);
    expect(await homes('fb-1')).to.deep.equal(['output:s3', 'stdout@0:s3']);
    const { rows } = await h.sql.query<{ s3_key: string; output_location: string }>(
      `SELECT b.s3_key, e.output_location FROM evaluation_bodies b JOIN evaluations e USING (eval_id)
        WHERE b.eval_id = 'fb-1' AND b.kind = 'output'`,
    );
    expect(rows[0]?.output_location).to.equal('s3');
    expect((await s3Bytes(rows[0]?.s3_key ?? '')).equals(output), 'the output, byte for byte').to.equal(true);
    const segment = await h.sql.query<{ s3_key: string }>(
      `SELECT s3_key FROM evaluation_log_segments WHERE eval_id = 'fb-1'`,
    );
    expect((await s3Bytes(segment.rows[0]?.s3_key ?? '')).equals(log), 'the segment, byte for byte').to.equal(true);
    const moves = (await eventsOf(h.sql, 'fb-1')).filter((e) => e.event_type === 'EvaluationBlobMoved');
    expect(moves.map((e) => (e.data as { kind: string }).kind).sort()).to.deep.equal(['output', 'stdout']);
    expect(
      await readdir(dir, { recursive: true }).then((names) => names.filter((n) => n.includes('fb-1/output/'))),
    ).to.deep.equal([]);
    expect(await mover().sweep(), 'nothing left to move').to.equal(0);
    expect((await denseLog(h.sql)).problems).to.deep.equal([]);
  });

  it('moves a blob once when two movers run at once, and again after a mover died before recording it', async () => {
    const down = await downExecutor();
    try {
      const commands = commandsOf(down.executor, h.env.config.limits);
      for (const evalId of ['fb-2', 'fb-3']) {
        await commands.submit({ evalId });
        await commands.start({ evalId });
        await commands.complete({ evalId, output: randomBytes(4000), exitCode: 0 });
      }
    } finally {
      down.close();
    }
    // The first mover copies fb-2's and fb-3's outputs but "dies" before recording either.
    const dying = mover(() => Promise.reject(new UnavailableError('killed before the event')));
    expect(await dying.sweep()).to.equal(0);
    expect(await homes('fb-2')).to.deep.equal(['output:file']);

    const [a, b] = await Promise.all([mover().sweep(), mover().sweep()]);
    expect(a + b, 'each blob moved by one of them').to.equal(2);
    for (const evalId of ['fb-2', 'fb-3']) {
      const moves = (await eventsOf(h.sql, evalId)).filter((e) => e.event_type === 'EvaluationBlobMoved');
      expect(moves, evalId).to.have.length(1);
      expect(await homes(evalId)).to.deep.equal(['output:s3']);
    }
  });
});
