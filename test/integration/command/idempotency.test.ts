import { expect } from 'chai';
import { AlreadyExistsError, IllegalTransitionError, RevisionConflictError } from '../../../shared/errors';
import { createHarness, denseLog, eventCount, eventsOf, type Harness } from './harness';

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => expect.fail(`expected a rejection, got ${JSON.stringify(value)}`),
    (err: unknown) => err,
  );
}

describe('command executor: idempotency and expected revisions', function () {
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    await h.close();
  });

  afterEach(async () => {
    expect((await denseLog(h.sql)).problems, 'event log stays dense').to.deep.equal([]);
  });

  async function updatedAt(evalId: string): Promise<string | undefined> {
    const { rows } = await h.sql.query<{ updated_at: Date }>('SELECT updated_at FROM evaluations WHERE eval_id = $1', [
      evalId,
    ]);
    return rows[0]?.updated_at.toISOString();
  }

  it('answers a repeated request_id with the original answer and writes nothing', async () => {
    const first = await h.commands.submit({ evalId: 'idem-1', requestId: 'idem-1-submit' });
    const started = await h.commands.start({ evalId: 'idem-1', requestId: 'idem-1-start' });
    const count = await eventCount(h.sql);
    const stamp = await updatedAt('idem-1');

    expect(await h.commands.submit({ evalId: 'idem-1', requestId: 'idem-1-submit' })).to.deep.equal(first);
    expect(await h.commands.start({ evalId: 'idem-1', requestId: 'idem-1-start' })).to.deep.equal(started);
    expect(await eventCount(h.sql)).to.equal(count);
    expect(await updatedAt('idem-1')).to.equal(stamp);
  });

  it('answers a request_id replay with the original answer even after the evaluation moved on', async () => {
    await h.commands.submit({ evalId: 'idem-2' });
    const started = await h.commands.start({ evalId: 'idem-2', requestId: 'idem-2-start' });
    await h.commands.complete({ evalId: 'idem-2', output: Buffer.from('done') });
    const count = await eventCount(h.sql);
    expect(await h.commands.start({ evalId: 'idem-2', requestId: 'idem-2-start' })).to.deep.equal(started);
    expect(await eventCount(h.sql)).to.equal(count);
  });

  it('answers a submit without eval_id repeated with its request_id with the first assigned id', async () => {
    const first = await h.commands.submit({ evalId: '', requestId: 'idem-anon' });
    const issued = h.issuedIds.length;
    const again = await h.commands.submit({ evalId: '', requestId: 'idem-anon' });
    expect(h.issuedIds.length, 'the retry was offered a fresh id').to.equal(issued + 1);
    expect(again).to.deep.equal(first);
    const { rows } = await h.sql.query<{ n: number }>('SELECT count(*)::int AS n FROM evaluations WHERE eval_id = $1', [
      h.issuedIds.at(-1),
    ]);
    expect(rows[0]?.n, 'the fresh id was not used').to.equal(0);
  });

  it('refuses a request_id reused with different content (ALREADY_EXISTS) and writes nothing', async () => {
    await h.commands.submit({ evalId: 'idem-3', requestId: 'idem-3-submit' });
    const count = await eventCount(h.sql);
    const err = await rejection(h.commands.submit({ evalId: 'idem-3b', requestId: 'idem-3-submit' }));
    expect(err).to.be.instanceOf(AlreadyExistsError);
    expect((err as Error).message).to.include('idem-3-submit');
    const other = await rejection(h.commands.start({ evalId: 'idem-3', requestId: 'idem-3-submit' }));
    expect(other).to.be.instanceOf(AlreadyExistsError);
    expect(await eventCount(h.sql)).to.equal(count);
  });

  it('answers the latest command repeated with the same content (no request_id) unchanged', async () => {
    await h.commands.submit({ evalId: 'idem-4' });
    const started = await h.commands.start({ evalId: 'idem-4', executorId: 'x', containerId: 'c' });
    const count = await eventCount(h.sql);
    expect(await h.commands.start({ evalId: 'idem-4', executorId: 'x', containerId: 'c' })).to.deep.equal(started);
    const completed = await h.commands.complete({ evalId: 'idem-4', output: Buffer.from('out'), exitCode: 0 });
    expect(await h.commands.complete({ evalId: 'idem-4', output: Buffer.from('out'), exitCode: 0 })).to.deep.equal(
      completed,
    );
    expect(await eventCount(h.sql)).to.equal(count + 1);
  });

  it('refuses any other command on a terminal evaluation (FAILED_PRECONDITION)', async () => {
    await h.commands.submit({ evalId: 'idem-5' });
    await h.commands.complete({ evalId: 'idem-5', output: Buffer.from('out'), exitCode: 0 });
    const count = await eventCount(h.sql);
    const err = await rejection(h.commands.complete({ evalId: 'idem-5', output: Buffer.from('other'), exitCode: 0 }));
    expect(err).to.be.instanceOf(IllegalTransitionError);
    expect(await eventCount(h.sql)).to.equal(count);
  });

  it('refuses the same eval_id submitted with different code (ALREADY_EXISTS)', async () => {
    await h.commands.submit({ evalId: 'idem-6', code: 'print(1)' });
    const count = await eventCount(h.sql);
    const err = await rejection(h.commands.submit({ evalId: 'idem-6', code: 'print(2)' }));
    expect(err).to.be.instanceOf(AlreadyExistsError);
    const { rows } = await h.sql.query<{ code: string }>(
      `SELECT convert_from(content, 'UTF8') AS code FROM evaluation_bodies WHERE eval_id = $1 AND kind = 'code'`,
      ['idem-6'],
    );
    expect(rows[0]?.code).to.equal('print(1)');
    expect(await eventCount(h.sql)).to.equal(count);
  });

  it('answers a late retry of a submit with the original answer after the evaluation completed', async () => {
    const submitted = await h.commands.submit({ evalId: 'idem-7', code: 'print(7)' });
    await h.commands.start({ evalId: 'idem-7' });
    await h.commands.complete({ evalId: 'idem-7', output: Buffer.from('7') });
    const count = await eventCount(h.sql);
    expect(await h.commands.submit({ evalId: 'idem-7', code: 'print(7)' })).to.deep.equal(submitted);
    expect(await eventCount(h.sql)).to.equal(count);
  });

  it('applies a command at the expected revision', async () => {
    await h.commands.submit({ evalId: 'rev-1', expectedRevision: '0' });
    const started = await h.commands.start({ evalId: 'rev-1', expectedRevision: '1' });
    expect(started.revision).to.equal('2');
  });

  it('refuses an expected_revision mismatch (ABORTED), naming the current revision, and writes nothing', async () => {
    await h.commands.submit({ evalId: 'rev-2' });
    await h.commands.start({ evalId: 'rev-2' });
    const count = await eventCount(h.sql);
    const stamp = await updatedAt('rev-2');
    const err = await rejection(h.commands.cancel({ evalId: 'rev-2', reason: 'stale', expectedRevision: '1' }));
    expect(err).to.be.instanceOf(RevisionConflictError);
    expect(err).to.include({ expected: '1', current: '2' });
    expect((err as Error).message).to.include('revision 2');
    const existing = await rejection(h.commands.submit({ evalId: 'rev-new', expectedRevision: '3' }));
    expect(existing).to.be.instanceOf(RevisionConflictError);
    expect(existing).to.include({ current: '0' });
    expect(await eventCount(h.sql)).to.equal(count);
    expect(await updatedAt('rev-2')).to.equal(stamp);
    expect((await eventsOf(h.sql, 'rev-new')).length).to.equal(0);
  });
});
