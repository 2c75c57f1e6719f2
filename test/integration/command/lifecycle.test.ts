import { createHash } from 'node:crypto';
import { expect } from 'chai';
import type { EvaluationRow } from '../../../shared/postgres';
import { FailureReason } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { commandHash, validateStart } from '../../../services/command/domain';
import { StartEvaluationRequest } from '../../../shared/generated/crucible/storage/v1/command_service';
import { createHarness, denseLog, eventsOf, type Harness } from './harness';

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

describe('command executor: lifecycle in PostgreSQL', function () {
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    await h.close();
  });

  afterEach(async () => {
    const log = await denseLog(h.sql);
    expect(log.problems, 'event log stays dense').to.deep.equal([]);
  });

  async function row(evalId: string): Promise<EvaluationRow> {
    const { rows } = await h.sql.query<EvaluationRow>(
      `SELECT e.*, e.output_size::text, e.error_size::text, e.revision::text,
              (SELECT convert_from(b.content, 'UTF8') FROM evaluation_bodies b
                WHERE b.eval_id = e.eval_id AND b.kind = 'code') AS code
         FROM evaluations e WHERE e.eval_id = $1`,
      [evalId],
    );
    const found = rows[0];
    if (found === undefined) return expect.fail(`no row for ${evalId}`);
    return found;
  }

  async function bodyRow(
    evalId: string,
    kind: string,
  ): Promise<{ size: string; content: Buffer | null; s3_key: string | null } | undefined> {
    const { rows } = await h.sql.query<{ size: string; content: Buffer | null; s3_key: string | null }>(
      'SELECT size::text, content, s3_key FROM evaluation_bodies WHERE eval_id = $1 AND kind = $2',
      [evalId, kind],
    );
    return rows[0];
  }

  it('records submit → start → complete as three dense events and one evolving row', async () => {
    const code = 'print("héllo")';
    const submitted = await h.commands.submit({
      evalId: 'life-1',
      code,
      language: 'python',
      engine: 'gvisor',
      timeoutSeconds: 90,
      metadata: { team: 'eval', tags: ['a', 'b'], depth: { n: 1 } },
      requestId: 'life-1-submit',
    });
    const queuedAt = h.clock.readings - 1;
    const started = await h.commands.start({ evalId: 'life-1', executorId: 'exec-7', containerId: 'ctr-9' });
    const output = Buffer.concat([Buffer.from('result: '), Buffer.alloc(2000, 0x41)]);
    const completed = await h.commands.complete({ evalId: 'life-1', output, exitCode: 0 });

    expect(submitted).to.deep.equal({ evalId: 'life-1', revision: '1', position: submitted.position });
    expect(started.revision).to.equal('2');
    expect(completed.revision).to.equal('3');
    expect(BigInt(started.position)).to.equal(BigInt(submitted.position) + 1n);
    expect(BigInt(completed.position)).to.equal(BigInt(started.position) + 1n);

    const events = await eventsOf(h.sql, 'life-1');
    expect(events.map((e) => [e.position, e.revision, e.event_type])).to.deep.equal([
      [submitted.position, '1', 'EvaluationQueued'],
      [started.position, '2', 'EvaluationStarted'],
      [completed.position, '3', 'EvaluationCompleted'],
    ]);
    const [queued, startedEvent, completedEvent] = events;
    const createdAt = new Date(Date.UTC(2025, 0, 1) + 1000 * queuedAt).toISOString();
    expect(queued?.data).to.deep.equal({
      codeHash: sha256(code),
      codeSize: Buffer.byteLength(code),
      language: 'python',
      engine: 'gvisor',
      timeoutSeconds: 90,
      metadata: { team: 'eval', tags: ['a', 'b'], depth: { n: 1 } },
      createdAt,
      tenantId: 'default',
    });
    expect(queued?.request_id).to.equal('life-1-submit');
    expect(queued?.recorded_at.toISOString()).to.equal(createdAt);
    expect(startedEvent?.data).to.deep.include({ executorId: 'exec-7', containerId: 'ctr-9' });
    expect(startedEvent?.request_id).to.equal(null);
    expect(startedEvent?.command_hash).to.equal(
      commandHash(
        validateStart(
          StartEvaluationRequest.fromPartial({ evalId: 'life-1', executorId: 'exec-7', containerId: 'ctr-9' }),
          h.env.config.limits,
        ),
      ),
    );
    expect(completedEvent?.data).to.deep.include({ exitCode: 0 });
    expect(completedEvent?.data.output).to.deep.equal({
      previewBase64: output.subarray(0, 1024).toString('base64'),
      size: output.length,
      location: 'postgres',
    });

    const r = await row('life-1');
    expect(r).to.deep.include({
      status: 'completed',
      code,
      code_hash: sha256(code),
      code_size: Buffer.byteLength(code),
      language: 'python',
      engine: 'gvisor',
      timeout_seconds: 90,
      executor_id: 'exec-7',
      container_id: 'ctr-9',
      exit_code: 0,
      output_size: String(output.length),
      output_location: 'postgres',
      error_location: '',
      revision: '3',
    });
    expect(r.metadata).to.deep.equal({ team: 'eval', tags: ['a', 'b'], depth: { n: 1 } });
    expect(r.output_preview?.equals(output.subarray(0, 1024))).to.equal(true);
    expect(r.created_at.toISOString()).to.equal(createdAt);
    expect(r.started_at?.toISOString()).to.equal(startedEvent?.data.startedAt);
    expect(r.completed_at?.toISOString()).to.equal(completedEvent?.data.completedAt);
    expect(r.updated_at.toISOString()).to.equal(completedEvent?.recorded_at.toISOString());
    expect(r.started_at?.getTime()).to.be.below(r.completed_at?.getTime() ?? 0);

    const body = await bodyRow('life-1', 'output');
    expect(body?.s3_key).to.equal(null);
    expect(body?.size).to.equal(String(output.length));
    expect(body?.content?.equals(output)).to.equal(true);
  });

  it('records a timed-out failure with its error preview, size and body', async () => {
    await h.commands.submit({ evalId: 'life-fail' });
    await h.commands.start({ evalId: 'life-fail' });
    // 1023 ASCII bytes, then a 3-byte character that straddles the 1024-byte preview limit.
    const error = 'E'.repeat(1023) + '€ and more';
    const failed = await h.commands.fail({
      evalId: 'life-fail',
      error,
      exitCode: 137,
      reason: FailureReason.FAILURE_REASON_TIMEOUT,
    });
    expect(failed.revision).to.equal('3');

    const r = await row('life-fail');
    expect(r).to.deep.include({
      status: 'failed',
      exit_code: 137,
      failure_reason: 'timeout',
      error_size: String(Buffer.byteLength(error)),
      error_location: 'postgres',
      error_preview: 'E'.repeat(1023),
      output_location: '',
      revision: '3',
    });
    const body = await bodyRow('life-fail', 'error');
    expect(body?.content?.toString('utf8')).to.equal(error);
    const [, , event] = await eventsOf(h.sql, 'life-fail');
    expect(event?.data).to.deep.include({ reason: 'timeout', exitCode: 137 });
  });

  it('records a failure with an empty error without a body row', async () => {
    await h.commands.submit({ evalId: 'life-fail-empty' });
    await h.commands.fail({ evalId: 'life-fail-empty', error: '', exitCode: 1 });
    const r = await row('life-fail-empty');
    expect(r).to.deep.include({ status: 'failed', failure_reason: 'error', error_size: '0', error_location: '' });
    expect(await bodyRow('life-fail-empty', 'error')).to.equal(undefined);
  });

  it('records a cancellation straight from QUEUED', async () => {
    await h.commands.submit({ evalId: 'life-cancel' });
    const cancelled = await h.commands.cancel({ evalId: 'life-cancel', reason: 'superseded' });
    expect(cancelled.revision).to.equal('2');
    const r = await row('life-cancel');
    expect(r).to.deep.include({ status: 'cancelled', cancel_reason: 'superseded', started_at: null, revision: '2' });
    expect(r.completed_at).to.be.instanceOf(Date);
  });

  it('records a fast job completed straight from QUEUED', async () => {
    await h.commands.submit({ evalId: 'life-fast' });
    const done = await h.commands.complete({ evalId: 'life-fast', output: Buffer.from('ok'), exitCode: 0 });
    expect(done.revision).to.equal('2');
    const events = await eventsOf(h.sql, 'life-fast');
    expect(events.map((e) => e.event_type)).to.deep.equal(['EvaluationQueued', 'EvaluationCompleted']);
    expect((await row('life-fast')).status).to.equal('completed');
  });

  it('assigns an id from the generator when the submit has none', async () => {
    const result = await h.commands.submit({ evalId: '' });
    expect(result.evalId).to.equal(h.issuedIds.at(-1));
    expect((await row(result.evalId)).revision).to.equal('1');
  });

  it('refuses illegal transitions and unknown ids without writing', async () => {
    await h.commands.submit({ evalId: 'life-illegal' });
    await h.commands.cancel({ evalId: 'life-illegal' });
    const before = await eventsOf(h.sql, 'life-illegal');
    for (const attempt of [
      () => h.commands.start({ evalId: 'life-illegal' }),
      () => h.commands.complete({ evalId: 'life-illegal', output: Buffer.from('x') }),
      () => h.commands.fail({ evalId: 'life-illegal', error: 'x' }),
      () => h.commands.cancel({ evalId: 'life-illegal', reason: 'again' }),
    ]) {
      const err = await attempt().then(
        () => expect.fail('expected FAILED_PRECONDITION'),
        (e: unknown) => e,
      );
      expect(err).to.have.property('kind', 'illegal_transition');
    }
    expect(await eventsOf(h.sql, 'life-illegal')).to.have.length(before.length);
    const missing = await h.commands.start({ evalId: 'no-such-eval' }).then(
      () => expect.fail('expected NOT_FOUND'),
      (e: unknown) => e,
    );
    expect(missing).to.have.property('kind', 'not_found');
  });
});
