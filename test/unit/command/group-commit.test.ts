import { expect } from 'chai';
import { createGroupCommit, type Settled } from '../../../services/command/application/group-commit';
import { deferred, type Deferred } from './in-memory-ports';

interface Write {
  readonly batch: readonly string[];
  readonly settle: (index: number, outcome: Settled<string>) => void;
  readonly done: Deferred<void>;
}

/** A batch writer the test drives: each write waits until the test ends it. */
function heldWriter(): {
  writes: Write[];
  writer: (batch: readonly string[], settle: Write['settle']) => Promise<void>;
} {
  const writes: Write[] = [];
  return {
    writes,
    writer: (batch, settle) => {
      const done = deferred();
      writes.push({ batch, settle, done });
      return done.promise;
    },
  };
}

/** Ends a write with every member written as `<request>@<batch number>`. */
function commit(write: Write, n: number): void {
  write.batch.forEach((request, i) => write.settle(i, { ok: true, value: `${request}@${n}` }));
  write.done.resolve();
}

const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const options = { maxBatch: 100, maxBatchBytes: 1000, sizeOf: (r: string) => r.length };

describe('group commit', () => {
  it('writes a lone request at once, without waiting for company', async () => {
    const { writes, writer } = heldWriter();
    const append = createGroupCommit(writer, options);
    const answer = append('a');
    await Promise.resolve();
    expect(writes.map((w) => w.batch)).to.deep.equal([['a']]);
    commit(writes[0]!, 1);
    expect(await answer).to.equal('a@1');
  });

  it('writes what arrives while a write is in flight as the next batch, in arrival order, one write at a time', async () => {
    const { writes, writer } = heldWriter();
    const append = createGroupCommit(writer, options);
    const first = append('a');
    await settle();
    const later = ['b', 'c', 'd'].map((r) => append(r));
    await settle();
    expect(writes, 'no second write while the first is in flight').to.have.length(1);
    commit(writes[0]!, 1);
    await settle();
    expect(writes.map((w) => w.batch)).to.deep.equal([['a'], ['b', 'c', 'd']]);
    commit(writes[1]!, 2);
    expect(await first).to.equal('a@1');
    expect(await Promise.all(later)).to.deep.equal(['b@2', 'c@2', 'd@2']);
  });

  it('bounds a batch by count and by bytes, a larger request going alone', async () => {
    const { writes, writer } = heldWriter();
    const append = createGroupCommit(writer, { maxBatch: 2, maxBatchBytes: 10, sizeOf: (r: string) => r.length });
    const all = ['aaaa', 'bbbb', 'cccc', 'dddddddddddddddd', 'e'].map((r) => append(r));
    for (let n = 1; n <= 4; n += 1) {
      await settle();
      commit(writes[n - 1]!, n);
    }
    await Promise.all(all);
    expect(writes.map((w) => w.batch)).to.deep.equal([['aaaa', 'bbbb'], ['cccc'], ['dddddddddddddddd'], ['e']]);
  });

  it('gives each member its own outcome, and a member settled early its answer before the write ends', async () => {
    const { writes, writer } = heldWriter();
    const append = createGroupCommit(writer, options);
    const answers = ['a', 'b', 'c'].map((r) => append(r));
    await settle();
    const write = writes[0]!;
    write.settle(1, { ok: false, error: new Error('b alone failed') });
    let bFailed = false;
    answers[1]!.catch(() => (bFailed = true));
    await settle();
    expect(bFailed, 'heard before the write ended').to.equal(true);
    write.settle(0, { ok: true, value: 'a ok' });
    write.settle(2, { ok: true, value: 'c ok' });
    write.done.resolve();
    expect(await answers[0]).to.equal('a ok');
    expect(await answers[2]).to.equal('c ok');
  });

  it('fails every member not yet settled when the write throws, and goes on with the next batch', async () => {
    const writes: (readonly string[])[] = [];
    let fail = true;
    const append = createGroupCommit<string, string>(async (batch, settleOne) => {
      await Promise.resolve();
      writes.push(batch);
      if (fail) {
        settleOne(0, { ok: true, value: 'kept' });
        throw new Error('outage');
      }
      batch.forEach((r, i) => settleOne(i, { ok: true, value: r }));
    }, options);
    const results = await Promise.allSettled(['a', 'b', 'c'].map((r) => append(r)));
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message))).to.deep.equal([
      'kept',
      'outage',
      'outage',
    ]);
    fail = false;
    expect(await append('d')).to.equal('d');
  });

  it('fails a member the writer gave no outcome rather than leaving it waiting', async () => {
    const append = createGroupCommit<string, string>(() => Promise.resolve(), options);
    const err = await append('a').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as Error).message).to.match(/no outcome for member 0/);
  });
});
