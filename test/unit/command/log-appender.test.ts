import { expect } from 'chai';
import { FailedPreconditionError, NotFoundError, UnavailableError } from '../../../shared/errors';
import { createLogger } from '../../../shared/logging';
import { appendLogs, type LogChunkIn } from '../../../services/command/application/log-appender';
import type { AppendLogSegment, Command, EvaluationSnapshot } from '../../../services/command/domain';

const SNAPSHOT: EvaluationSnapshot = {
  evalId: 'e1',
  status: 'running',
  revision: '2',
  submitted: { evalId: 'e1', revision: '1', position: '1', commandHash: 'a' },
  latest: { evalId: 'e1', revision: '2', position: '2', commandHash: 'b' },
  createdAt: new Date(),
  metricNames: [],
  logBytes: { stdout: 5, stderr: 0 },
};

const chunk = (offset: number, text: string): LogChunkIn => ({ offset, data: Buffer.from(text) });

async function* chunks(...items: LogChunkIn[]): AsyncGenerator<LogChunkIn> {
  for (const item of items) {
    await Promise.resolve();
    yield item;
  }
}

/** The segments written, as [offset, text]; `fail` makes the n-th write (1-based) throw. */
function world(options: { flushMs?: number; segmentMax?: number; fail?: number; snapshot?: EvaluationSnapshot } = {}) {
  const segments: [number, string][] = [];
  let written: () => void = () => undefined;
  const firstWrite = new Promise<void>((resolve) => (written = resolve));
  const deps = {
    store: {
      load: (evalId: string | undefined) =>
        Promise.resolve(evalId === 'e1' ? { snapshot: options.snapshot ?? SNAPSHOT } : {}),
    },
    execute: (command: Command) => {
      const { offset, data } = command as AppendLogSegment;
      if (segments.length + 1 === options.fail) return Promise.reject(new UnavailableError('PostgreSQL is down'));
      segments.push([offset, data.toString()]);
      written();
      return Promise.resolve({
        evalId: 'e1',
        revision: String(2 + segments.length),
        position: String(10 + segments.length),
      });
    },
    limits: { logFlushMs: options.flushMs ?? 60_000, logSegmentMaxBytes: options.segmentMax ?? 1024 },
    logger: createLogger('error', {}),
  };
  return { deps, segments, firstWrite };
}

const STDOUT = { evalId: 'e1', stream: 'stdout' } as const;

describe('AppendLogs: a call cut into segments', () => {
  it('stores the call as one segment at its end, after the stored bytes, and answers the size and revision', async () => {
    const w = world();
    const done = await appendLogs(w.deps, STDOUT, chunks(chunk(5, 'abc'), chunk(8, 'de')), 'default');
    expect(w.segments).to.deep.equal([[5, 'abcde']]);
    expect(done).to.deep.equal({ size: 10, result: { evalId: 'e1', revision: '3', position: '11' } });
  });

  it('drops what is stored or taken already, keeping the new part of an overlapping chunk', async () => {
    const w = world();
    const done = await appendLogs(
      w.deps,
      STDOUT,
      chunks(chunk(0, 'hello'), chunk(3, 'loWORLD'), chunk(5, 'WO'), chunk(10, '!')),
      'default',
    );
    expect(w.segments).to.deep.equal([[5, 'WORLD!']]);
    expect(done.size).to.equal(11);
  });

  it('answers a call of nothing new with the current size and revision, writing nothing', async () => {
    const w = world();
    expect(await appendLogs(w.deps, STDOUT, chunks(chunk(0, 'hel')), 'default')).to.deep.equal({
      size: 5,
      result: { evalId: 'e1', revision: '2', position: '2' },
    });
    expect(w.segments).to.deep.equal([]);
  });

  it('stores a segment as soon as LOG_SEGMENT_MAX_BYTES wait', async () => {
    const w = world({ segmentMax: 6 });
    await appendLogs(
      w.deps,
      STDOUT,
      chunks(chunk(5, 'aaaa'), chunk(9, 'bbbb'), chunk(13, 'cc'), chunk(15, 'd')),
      'default',
    );
    expect(w.segments).to.deep.equal([
      [5, 'aaaabbbb'],
      [13, 'ccd'],
    ]);
  });

  it('stores what waits after LOG_FLUSH_MS while the call is still open', async () => {
    const w = world({ flushMs: 5 });
    async function* slowWriter(): AsyncGenerator<LogChunkIn> {
      yield chunk(5, 'first');
      await w.firstWrite; // the call stays open until the timer stored the first chunk
      yield chunk(10, 'second');
    }
    await appendLogs(w.deps, STDOUT, slowWriter(), 'default');
    expect(w.segments).to.deep.equal([
      [5, 'first'],
      [10, 'second'],
    ]);
  });

  it('refuses a gap after storing what came before it, naming the offset to write next', async () => {
    const w = world();
    const err = await appendLogs(w.deps, STDOUT, chunks(chunk(5, 'ok'), chunk(9, 'gap')), 'default').catch(
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(FailedPreconditionError);
    expect((err as Error).message).to.include('must start at offset 7, not 9');
    expect(w.segments).to.deep.equal([[5, 'ok']]);
  });

  it('stores what a broken call delivered, and reports the break', async () => {
    const w = world();
    async function* broken(): AsyncGenerator<LogChunkIn> {
      yield chunk(5, 'partial');
      await Promise.resolve();
      throw new Error('the client went away');
    }
    const err = await appendLogs(w.deps, STDOUT, broken(), 'default').catch((e: unknown) => e);
    expect((err as Error).message).to.equal('the client went away');
    expect(w.segments).to.deep.equal([[5, 'partial']]);
  });

  it('fails the call when a segment cannot be stored, and writes nothing after it', async () => {
    const w = world({ segmentMax: 2, fail: 1 });
    const err = await appendLogs(w.deps, STDOUT, chunks(chunk(5, 'aa'), chunk(7, 'bb')), 'default').catch(
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UnavailableError);
    expect(w.segments).to.deep.equal([]);
  });

  it('is NOT_FOUND for an unknown evaluation before taking any chunk', async () => {
    const w = world();
    let pulled = false;
    async function* watched(): AsyncGenerator<LogChunkIn> {
      pulled = true;
      await Promise.resolve();
      yield chunk(0, 'x');
    }
    const err = await appendLogs(w.deps, { evalId: 'nobody', stream: 'stdout' }, watched(), 'default').catch(
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(NotFoundError);
    expect(pulled).to.equal(false);
  });
});
