import { randomBytes } from 'node:crypto';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { AlreadyExistsError, IllegalTransitionError } from '../../../shared/errors';
import type { CommandResult } from '../../../services/command/domain';
import {
  commandsOf,
  createHarness,
  denseLog,
  eventsOf,
  racingStore,
  type Commands,
  type Harness,
  type RacingStore,
} from './harness';

const PARALLEL = 20;
const MiB = 1024 * 1024;

function outcomes(settled: PromiseSettledResult<CommandResult>[]): {
  answers: CommandResult[];
  errors: unknown[];
} {
  return {
    answers: settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : [])),
    errors: settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : [])),
  };
}

describe('command executor: concurrent commands', function () {
  this.timeout(60_000);
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

  /**
   * Commands whose first `parties` loads are held until all have loaded, so that they all write.
   * Submits need none held: a submit of a new id writes without loading first, so parallel
   * submits all race to write by themselves.
   */
  function racing(parties: number): { commands: Commands; race: RacingStore } {
    const race = racingStore(h.store, parties);
    return { commands: commandsOf(h.executorWith({ store: race.store }), h.env.config.limits), race };
  }

  it(`lets exactly one of ${PARALLEL} identical parallel submits write; all get its answer`, async () => {
    const { commands, race } = racing(0);
    const settled = await Promise.allSettled(
      Array.from({ length: PARALLEL }, () => commands.submit({ evalId: 'dup-submit', code: 'print("same")' })),
    );
    expect(race.appends, 'all raced to write, one won').to.deep.equal({ appended: 1, conflicts: PARALLEL - 1 });
    const { answers, errors } = outcomes(settled);
    expect(errors).to.deep.equal([]);
    const events = await eventsOf(h.sql, 'dup-submit');
    expect(events).to.have.length(1);
    for (const answer of answers) {
      expect(answer).to.deep.equal({ evalId: 'dup-submit', revision: '1', position: events[0]?.position });
    }
  });

  it(`lets exactly one of ${PARALLEL} parallel starts with the same request_id write; all get its answer`, async () => {
    await h.commands.submit({ evalId: 'dup-start' });
    const { commands, race } = racing(PARALLEL);
    const settled = await Promise.allSettled(
      Array.from({ length: PARALLEL }, () =>
        commands.start({ evalId: 'dup-start', executorId: 'exec-1', requestId: 'dup-start-req' }),
      ),
    );
    expect(race.appends).to.deep.equal({ appended: 1, conflicts: PARALLEL - 1 });
    const { answers, errors } = outcomes(settled);
    expect(errors).to.deep.equal([]);
    const started = (await eventsOf(h.sql, 'dup-start')).filter((e) => e.event_type === 'EvaluationStarted');
    expect(started).to.have.length(1);
    expect(started[0]?.request_id).to.equal('dup-start-req');
    for (const answer of answers) {
      expect(answer).to.deep.equal({ evalId: 'dup-start', revision: '2', position: started[0]?.position });
    }
  });

  it(`gives ${PARALLEL} parallel submits without eval_id but with one request_id a single evaluation`, async () => {
    const { commands, race } = racing(0);
    const settled = await Promise.allSettled(
      Array.from({ length: PARALLEL }, () => commands.submit({ evalId: '', requestId: 'dup-anon' })),
    );
    expect(race.appends).to.deep.equal({ appended: 1, conflicts: PARALLEL - 1 });
    const { answers, errors } = outcomes(settled);
    expect(errors).to.deep.equal([]);
    expect(new Set(answers.map((a) => a.evalId)).size, 'every caller got the same id').to.equal(1);
    const { rows } = await h.sql.query<{ events: number; evaluations: number }>(
      `SELECT (SELECT count(*)::int FROM evaluation_events WHERE request_id = 'dup-anon') AS events,
              (SELECT count(*)::int FROM evaluations WHERE eval_id = ANY($1)) AS evaluations`,
      [h.issuedIds.slice(-PARALLEL)],
    );
    expect(rows[0], 'the losers left no evaluation behind').to.deep.equal({ events: 1, evaluations: 1 });
  });

  it(`lets one of ${PARALLEL} different submits racing for one eval_id win; the rest get ALREADY_EXISTS`, async () => {
    const { commands, race } = racing(0);
    const settled = await Promise.allSettled(
      Array.from({ length: PARALLEL }, (_, i) => commands.submit({ evalId: 'race-submit', code: `print(${i})` })),
    );
    expect(race.appends).to.deep.equal({ appended: 1, conflicts: PARALLEL - 1 });
    const { answers, errors } = outcomes(settled);
    expect(answers).to.have.length(1);
    expect(errors).to.have.length(PARALLEL - 1);
    for (const err of errors) expect(err).to.be.instanceOf(AlreadyExistsError);
    const events = await eventsOf(h.sql, 'race-submit');
    expect(events).to.have.length(1);
    expect(answers[0]).to.deep.equal({ evalId: 'race-submit', revision: '1', position: events[0]?.position });
    const winner = settled.findIndex((s) => s.status === 'fulfilled');
    const { rows } = await h.sql.query<{ code: string }>(
      `SELECT convert_from(content, 'UTF8') AS code FROM evaluation_bodies WHERE eval_id = $1 AND kind = 'code'`,
      ['race-submit'],
    );
    expect(rows[0]?.code, 'the stored code is the winner’s').to.equal(`print(${winner})`);
  });

  it('lets exactly one of Complete and Cancel racing win; the other gets FAILED_PRECONDITION', async () => {
    const ids = Array.from({ length: 10 }, (_, i) => `race-end-${i}`);
    for (const evalId of ids) {
      await h.commands.submit({ evalId });
      await h.commands.start({ evalId });
    }
    const results = await Promise.all(
      ids.map(async (evalId) => {
        const { commands, race } = racing(2);
        const [complete, cancel] = await Promise.allSettled([
          commands.complete({ evalId, output: Buffer.from(`out ${evalId}`), exitCode: 0 }),
          commands.cancel({ evalId, reason: 'race' }),
        ]);
        return { evalId, complete, cancel, appends: race.appends };
      }),
    );
    for (const { evalId, complete, cancel, appends } of results) {
      expect(appends, evalId).to.deep.equal({ appended: 1, conflicts: 1 });
      const losers = [complete, cancel].flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
      expect(losers, evalId).to.have.length(1);
      expect(losers[0], evalId).to.be.instanceOf(IllegalTransitionError);

      const events = await eventsOf(h.sql, evalId);
      expect(events.map((e) => e.revision)).to.deep.equal(['1', '2', '3']);
      const status = complete.status === 'fulfilled' ? 'completed' : 'cancelled';
      const { rows } = await h.sql.query<{ status: string; bodies: number }>(
        `SELECT status, (SELECT count(*)::int FROM evaluation_bodies b WHERE b.eval_id = e.eval_id AND b.kind <> 'code') AS bodies
           FROM evaluations e WHERE eval_id = $1`,
        [evalId],
      );
      expect(rows[0]?.status, evalId).to.equal(status);
      expect(rows[0]?.bodies, 'only a completion leaves a body').to.equal(status === 'completed' ? 1 : 0);
    }
  });

  it('lets one of several identical completes with an S3 output write; the object stays intact', async () => {
    const parties = 5;
    const output = randomBytes(MiB + 4096);
    await h.commands.submit({ evalId: 'dup-large' });
    const { commands, race } = racing(parties);
    const settled = await Promise.allSettled(
      Array.from({ length: parties }, () => commands.complete({ evalId: 'dup-large', output, exitCode: 0 })),
    );
    expect(race.appends).to.deep.equal({ appended: 1, conflicts: parties - 1 });
    const { answers, errors } = outcomes(settled);
    expect(errors).to.deep.equal([]);
    expect(new Set(answers.map((a) => JSON.stringify(a))).size, 'one answer for all').to.equal(1);
    const { rows } = await h.sql.query<{ s3_key: string }>(
      `SELECT s3_key FROM evaluation_bodies WHERE eval_id = 'dup-large' AND kind = 'output'`,
    );
    expect(rows).to.have.length(1);
    const object = await h.s3.send(new GetObjectCommand({ Bucket: h.env.config.s3.bucket, Key: rows[0]?.s3_key }));
    expect(Buffer.from((await object.Body?.transformToByteArray()) ?? []).equals(output)).to.equal(true);
  });

  it('keeps positions dense and revisions consecutive under many writers on many evaluations', async () => {
    const ids = Array.from({ length: 15 }, (_, i) => `many-${i}`);
    await Promise.all(
      ids.map(async (evalId) => {
        await h.commands.submit({ evalId });
        await h.commands.start({ evalId });
        await h.commands.complete({ evalId, output: Buffer.from(evalId) });
      }),
    );
    for (const evalId of ids) expect(await eventsOf(h.sql, evalId)).to.have.length(3);
  });
});
