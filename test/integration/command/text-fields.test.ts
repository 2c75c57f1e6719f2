import { expect } from 'chai';
import { CrucibleError, ValidationError } from '../../../shared/errors';
import { createHarness, denseLog, eventCount, type Harness } from './harness';

/**
 * Text from executors and clients ends up in PostgreSQL `text` and `jsonb` columns, which
 * cannot hold U+0000 although protobuf strings can. Every such input must either be stored or
 * be refused as INVALID_ARGUMENT naming the field; never reach the database as a raw error
 * (which the caller sees as INTERNAL).
 */
describe('command executor: text fields', function () {
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

  /** Stored, or refused with a ValidationError on `field`; anything else fails the test. */
  async function storedOrRefusedOn(field: string, command: () => Promise<unknown>): Promise<'stored' | 'refused'> {
    const count = await eventCount(h.sql);
    // Through a promise: validation throws synchronously, before the executor's promise exists.
    const err = await Promise.resolve()
      .then(command)
      .then(
        () => undefined,
        (e: unknown) => e ?? new Error('rejected with nothing'),
      );
    if (err === undefined) {
      expect(await eventCount(h.sql)).to.equal(count + 1);
      return 'stored';
    }
    if (!(err instanceof CrucibleError)) {
      expect.fail(`unmapped ${(err as Error).constructor.name} (the caller gets INTERNAL): ${(err as Error).message}`);
    }
    expect(err).to.be.instanceOf(ValidationError);
    expect((err as ValidationError).violations.map((v) => v.field)).to.include(field);
    expect(await eventCount(h.sql)).to.equal(count);
    return 'refused';
  }

  it('stores non-ASCII text in every field exactly', async () => {
    await h.commands.submit({ evalId: 'text-utf8', code: 'print("日本語 😀")', metadata: { note: 'ünïcødé 😀' } });
    await h.commands.start({ evalId: 'text-utf8', executorId: 'exécuteur', containerId: 'конт' });
    await h.commands.fail({ evalId: 'text-utf8', error: 'Fehler: ß 😀' });
    const { rows } = await h.sql.query<{ code: string; metadata: unknown; executor_id: string; error_preview: string }>(
      `SELECT (SELECT convert_from(content, 'UTF8') FROM evaluation_bodies WHERE eval_id = e.eval_id AND kind = 'code') AS code,
              metadata, executor_id, error_preview
         FROM evaluations e WHERE eval_id = 'text-utf8'`,
    );
    expect(rows[0]).to.deep.equal({
      code: 'print("日本語 😀")',
      metadata: { note: 'ünïcødé 😀' },
      executor_id: 'exécuteur',
      error_preview: 'Fehler: ß 😀',
    });
  });

  // U+0000 would reach PostgreSQL as an unmapped DatabaseError (22021 / 22P05), i.e. INTERNAL:
  // validation refuses it where the field is ours, the error preview replaces it.
  describe('U+0000 in text fields', () => {
    it('FailEvaluation: an error text (stderr) containing NUL is recorded, its bytes kept whole', async () => {
      await h.commands.submit({ evalId: 'nul-fail' });
      const error = 'segfault\u0000\u0000core dumped';
      const outcome = await storedOrRefusedOn('error', () =>
        h.commands.fail({ evalId: 'nul-fail', error, exitCode: 139 }),
      );
      // An executor cannot do better than send what the program wrote: refusing loses the failure.
      expect(outcome).to.equal('stored');
      const { rows } = await h.sql.query<{ content: Buffer }>(
        `SELECT content FROM evaluation_bodies WHERE eval_id = 'nul-fail' AND kind = 'error'`,
      );
      expect(rows[0]?.content.toString('utf8')).to.equal(error);
    });

    it('SubmitEvaluation: code containing NUL is stored or refused on code', async () => {
      await storedOrRefusedOn('code', () => h.commands.submit({ evalId: 'nul-code', code: 'print(1)\u0000' }));
    });

    it('SubmitEvaluation: metadata containing NUL is stored or refused on metadata', async () => {
      await storedOrRefusedOn('metadata', () => h.commands.submit({ evalId: 'nul-meta', metadata: { a: 'x\u0000y' } }));
    });

    it('StartEvaluation: an executor_id containing NUL is stored or refused on executor_id', async () => {
      await h.commands.submit({ evalId: 'nul-start' });
      await storedOrRefusedOn('executor_id', () => h.commands.start({ evalId: 'nul-start', executorId: 'exec\u0000' }));
    });

    it('CancelEvaluation: a reason containing NUL is stored or refused on reason', async () => {
      await h.commands.submit({ evalId: 'nul-cancel' });
      await storedOrRefusedOn('reason', () => h.commands.cancel({ evalId: 'nul-cancel', reason: 'user\u0000' }));
    });
  });
});
