import { GetObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { FailedPreconditionError } from '../../../shared/errors';
import type { LogChunkIn } from '../../../services/command/application/log-appender';
import { createHarness, denseLog, eventsOf, type Harness } from './harness';

/** The log's segments as PostgreSQL keeps them, in order. */
async function segmentsOf(
  h: Harness,
  evalId: string,
  stream: string,
): Promise<{ start: number; size: number; content: Buffer | null; key: string | null; position: string }[]> {
  const { rows } = await h.sql.query<{
    start_offset: string;
    size: string;
    content: Buffer | null;
    s3_key: string | null;
    position: string;
  }>(
    `SELECT start_offset::text, size::text, content, s3_key, position::text
       FROM evaluation_log_segments WHERE eval_id = $1 AND stream = $2 ORDER BY start_offset`,
    [evalId, stream],
  );
  return rows.map((r) => ({
    start: Number(r.start_offset),
    size: Number(r.size),
    content: r.content,
    key: r.s3_key,
    position: r.position,
  }));
}

async function* chunks(...items: [number, string | Buffer][]): AsyncGenerator<LogChunkIn> {
  for (const [offset, data] of items) {
    await Promise.resolve();
    yield { offset, data: Buffer.isBuffer(data) ? data : Buffer.from(data) };
  }
}

/** Reads an S3-kept segment back. */
async function objectBytes(h: Harness, key: string): Promise<Buffer> {
  const object = await h.s3.send(new GetObjectCommand({ Bucket: h.env.config.s3.bucket, Key: key }));
  return Buffer.from(await (object.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
}

describe('command executor: logs in PostgreSQL and S3', function () {
  this.timeout(60_000);
  let h: Harness;

  before(async () => {
    // Segments above 1 KiB go to S3, so that both homes are exercised.
    h = await createHarness({ INLINE_OUTPUT_MAX_BYTES: '1024' });
  });
  after(async () => {
    await h?.close();
  });

  async function running(evalId: string): Promise<void> {
    await h.commands.submit({ evalId });
    await h.commands.start({ evalId, executorId: 'x', containerId: 'c' });
  }

  it('writes each segment with its event and the stored size, in one statement; large ones to S3', async () => {
    await running('log-1');
    const large = Buffer.alloc(5000, 'y');
    const done = await h.executor.appendLogs(
      { evalId: 'log-1', stream: 'stdout' },
      chunks([0, 'small line\n'], [11, large]),
    );
    expect(done.size).to.equal(5011);
    const segments = await segmentsOf(h, 'log-1', 'stdout');
    expect(segments.map((s) => [s.start, s.size])).to.deep.equal([[0, 5011]]);
    const [segment] = segments;
    expect(segment?.content, 'a segment above the inline limit is in S3').to.equal(null);
    expect(
      (await objectBytes(h, segment?.key ?? '')).equals(Buffer.concat([Buffer.from('small line\n'), large])),
    ).to.equal(true);

    const small = await h.executor.appendLogs({ evalId: 'log-1', stream: 'stdout' }, chunks([5011, 'tail\n']));
    expect(small.size).to.equal(5016);
    const after = await segmentsOf(h, 'log-1', 'stdout');
    expect(after[1]?.content?.toString()).to.equal('tail\n');

    const events = await eventsOf(h.sql, 'log-1');
    const logged = events.filter((e) => e.event_type === 'EvaluationLogsAppended');
    expect(logged.map((e) => [e.data, e.position])).to.deep.equal([
      [{ stream: 'stdout', offset: 0, length: 5011 }, after[0]?.position],
      [{ stream: 'stdout', offset: 5011, length: 5 }, after[1]?.position],
    ]);
    const { rows } = await h.sql.query<{ stdout_bytes: string; stderr_bytes: string; status: string }>(
      `SELECT stdout_bytes::text, stderr_bytes::text, status FROM evaluations WHERE eval_id = 'log-1'`,
    );
    expect(rows[0]).to.deep.equal({ stdout_bytes: '5016', stderr_bytes: '0', status: 'running' });
    expect((await denseLog(h.sql)).problems).to.deep.equal([]);
  });

  it('keeps a log gap-free and every byte once when two writers race on it', async () => {
    await running('log-race');
    const text = 'abcdefghijklmnopqrstuvwxyz';
    // Both send the whole log, in different cuts: whoever is second finds part of it stored.
    const cuts: [number, string][][] = [
      [
        [0, text.slice(0, 10)],
        [10, text.slice(10)],
      ],
      [
        [0, text.slice(0, 4)],
        [4, text.slice(4, 20)],
        [20, text.slice(20)],
      ],
    ];
    const results = await Promise.allSettled(
      cuts.map((cut) => h.executor.appendLogs({ evalId: 'log-race', stream: 'stderr' }, chunks(...cut))),
    );
    for (const result of results) {
      if (result.status === 'rejected') {
        // A writer whose view went stale mid-call is told where the log is: never a silent loss.
        expect(result.reason).to.be.instanceOf(FailedPreconditionError);
      }
    }
    const segments = await segmentsOf(h, 'log-race', 'stderr');
    let next = 0;
    for (const segment of segments) {
      expect(segment.start, 'segments follow each other').to.equal(next);
      next += segment.size;
    }
    const stored = Buffer.concat(segments.map((s) => s.content ?? Buffer.alloc(0))).toString();
    expect(text.startsWith(stored), `stored "${stored}"`).to.equal(true);
    expect(results.some((r) => r.status === 'fulfilled')).to.equal(true);
    expect(stored).to.equal(text);
  });
});
