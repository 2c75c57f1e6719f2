import { GetObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import type { Pool } from 'pg';
import { DEFAULT_TENANT, type LogStream } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import { asLogin, createPool } from '../../../shared/postgres';
import type { LogPart, LogWindow } from '../../../services/query/handlers/read-logs';
import { createPostgresLogs } from '../../../services/query/postgres/log-segments';
import { createHarness, type Harness } from '../command/harness';

/** The bytes a window holds, read from S3 where a part is a range of an object. */
async function bytesOf(h: Harness, parts: readonly LogPart[]): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (const part of parts) {
    if ('bytes' in part) {
      pieces.push(part.bytes);
      continue;
    }
    const { from } = part.blob;
    const object = await h.s3.send(
      new GetObjectCommand({
        Bucket: h.env.config.s3.bucket,
        Key: part.blob.key,
        Range: `bytes=${from}-${from + part.length - 1}`,
      }),
    );
    const body = object.Body as { transformToByteArray(): Promise<Uint8Array> };
    pieces.push(Buffer.from(await body.transformToByteArray()));
  }
  return Buffer.concat(pieces);
}

describe('live log reads: one statement for many followers', function () {
  this.timeout(60_000);
  let h: Harness;
  let pool: Pool;
  /** What each evaluation's stdout and stderr hold. */
  const logs = new Map<string, Record<LogStream, Buffer>>();

  before(async () => {
    // Segments above 1 KiB go to S3: windows of both homes.
    h = await createHarness({ INLINE_OUTPUT_MAX_BYTES: '1024' });
    // The query service's login: the tenant policies apply to it (the owner bypasses them).
    pool = createPool({
      url: asLogin(h.env.config.databaseUrl, 'crucible_query'),
      readOnly: true,
      applicationName: 'log-reads-it',
    });
    for (let i = 0; i < 12; i += 1) {
      const evalId = `reads-${i}`;
      await h.commands.submit({ evalId });
      await h.commands.start({ evalId, executorId: 'x', containerId: 'c' });
      const stdout = Buffer.from(`line ${i}\n`.repeat(20 + i * 40)); // 160 B to ~4 KiB: some in S3
      const stderr = Buffer.from(`err ${i}\n`.repeat(i + 1));
      await h.executor.appendLogs({ evalId, stream: 'stdout' }, once(0, stdout.subarray(0, 100)));
      await h.executor.appendLogs({ evalId, stream: 'stdout' }, once(100, stdout.subarray(100)));
      await h.executor.appendLogs({ evalId, stream: 'stderr' }, once(0, stderr));
      logs.set(evalId, { stdout, stderr });
    }
    await h.commands.complete({ evalId: 'reads-0' });
  });
  after(async () => {
    await pool?.end();
    await h?.close();
  });

  async function* once(offset: number, data: Buffer): AsyncGenerator<{ offset: number; data: Buffer }> {
    await Promise.resolve();
    yield { offset, data };
  }

  it('answers each of many reads asked at once with its own state and bytes, across segments and homes', async () => {
    const stored = createPostgresLogs(pool);
    // More reads than go in one statement, and more statements than run at once: some wait.
    const asked: { evalId: string; stream: LogStream; from: number; to: number }[] = [];
    for (const [evalId, { stdout, stderr }] of logs) {
      asked.push({ evalId, stream: 'stdout', from: 0, to: 1 << 20 });
      asked.push({ evalId, stream: 'stdout', from: 50, to: 150 }); // across the two segments
      asked.push({ evalId, stream: 'stdout', from: stdout.length, to: stdout.length + 10 }); // nothing yet
      asked.push({ evalId, stream: 'stderr', from: 1, to: stderr.length });
      for (let k = 0; k < 8; k += 1) asked.push({ evalId, stream: 'stdout', from: 10 + k, to: 90 + k * 30 });
    }
    const windows = await Promise.all(asked.map((a) => stored.read(DEFAULT_TENANT, a.evalId, a.stream, a.from, a.to)));
    for (const [i, a] of asked.entries()) {
      const window = windows[i] as LogWindow;
      const log = (logs.get(a.evalId) as Record<LogStream, Buffer>)[a.stream];
      expect(window, `${a.evalId} ${a.stream}`).to.not.equal('unknown-evaluation');
      expect(window.state.size, `${a.evalId} ${a.stream} size`).to.equal(log.length);
      expect(window.state.ended, `${a.evalId} ended`).to.equal(a.evalId === 'reads-0');
      const expected = log.subarray(a.from, a.to);
      expect(window.parts[0]?.offset ?? a.from, 'first part starts at the offset asked').to.equal(a.from);
      expect(
        (await bytesOf(h, window.parts)).equals(expected),
        `${a.evalId} ${a.stream} [${a.from}, ${a.to})`,
      ).to.equal(true);
    }
    expect(
      windows.some((w) => w !== 'unknown-evaluation' && w.parts.some((p) => 'blob' in p)),
      'some parts are ranges of S3 objects',
    ).to.equal(true);
  });

  it("groups reads by tenant: another tenant's read of an evaluation, asked with the owner's, finds nothing", async () => {
    const stored = createPostgresLogs(pool);
    // Asked in one turn: they wait together, so a statement could hold reads of both tenants.
    const [mine, theirs, none, theirsToo] = await Promise.all([
      stored.read(DEFAULT_TENANT, 'reads-3', 'stdout', 0, 100),
      stored.read('someone-else', 'reads-3', 'stdout', 0, 100),
      stored.read(DEFAULT_TENANT, 'no-such-evaluation', 'stdout', 0, 100),
      stored.read('someone-else', 'reads-4', 'stdout', 0, 100),
    ]);
    expect(mine).to.not.equal('unknown-evaluation');
    expect((await bytesOf(h, (mine as LogWindow).parts)).equals(logs.get('reads-3')!.stdout.subarray(0, 100))).to.equal(
      true,
    );
    expect(theirs).to.equal('unknown-evaluation');
    expect(none).to.equal('unknown-evaluation');
    expect(theirsToo).to.equal('unknown-evaluation');
  });

  it('fails only the read whose own data fails its statement, not those asked with it', async () => {
    const stored = createPostgresLogs(pool);
    // A range that ends before it starts makes substring() refuse: an error of that read's data.
    const [before, broken, after] = await Promise.allSettled([
      stored.read(DEFAULT_TENANT, 'reads-5', 'stdout', 0, 50),
      stored.read(DEFAULT_TENANT, 'reads-5', 'stdout', 60, 50),
      stored.read(DEFAULT_TENANT, 'reads-6', 'stdout', 0, 50),
    ]);
    expect(broken.status).to.equal('rejected');
    expect((broken as PromiseRejectedResult).reason).to.not.be.instanceOf(UnavailableError);
    for (const [result, evalId] of [
      [before, 'reads-5'],
      [after, 'reads-6'],
    ] as const) {
      expect(result.status, evalId).to.equal('fulfilled');
      const window = (result as PromiseFulfilledResult<LogWindow>).value;
      expect((await bytesOf(h, window.parts)).equals(logs.get(evalId)!.stdout.subarray(0, 50))).to.equal(true);
    }
  });

  it('fails every read of a statement UNAVAILABLE when PostgreSQL cannot be reached, then serves the next ones', async () => {
    let down = true;
    let connects = 0;
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const flaky = {
      connect: () => {
        connects += 1;
        return down ? Promise.reject(refused) : pool.connect();
      },
    } as unknown as Pool;
    const stored = createPostgresLogs(flaky);
    const results = await Promise.allSettled([
      stored.read(DEFAULT_TENANT, 'reads-1', 'stdout', 0, 10),
      stored.read(DEFAULT_TENANT, 'reads-2', 'stdout', 0, 10),
      stored.read(DEFAULT_TENANT, 'reads-3', 'stdout', 0, 10),
    ]);
    expect(connects, 'one statement tried: an outage is not retried read by read').to.equal(1);
    for (const result of results) {
      expect(result.status).to.equal('rejected');
      expect((result as PromiseRejectedResult).reason).to.be.instanceOf(UnavailableError);
    }
    down = false;
    const window = await stored.read(DEFAULT_TENANT, 'reads-1', 'stdout', 0, 10);
    expect(window).to.not.equal('unknown-evaluation');
    expect((window as LogWindow).parts[0]?.offset).to.equal(0);
  });
});
