import { expect } from 'chai';
import { Client } from 'pg';
import { createHarness, denseLog, EXECUTOR_APPLICATION, eventsOf, track, until, type Harness } from './harness';

describe('command executor: the event log', function () {
  this.timeout(30_000);
  let h: Harness;
  /** A second connection that plays a concurrent writer holding its transaction open. */
  let writer: Client;
  let writerPid: number;

  before(async () => {
    h = await createHarness();
    writer = new Client({ connectionString: h.env.config.databaseUrl, application_name: 'crucible-command-it-writer' });
    await writer.connect();
    const { rows } = await writer.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    writerPid = rows[0]?.pid ?? expect.fail('no backend pid');
  });

  after(async () => {
    await writer.end();
    await h.close();
  });

  afterEach(async () => {
    // A failed test must not leave the writer's transaction (and the head lock) open.
    await writer.query('ROLLBACK');
  });

  /** Opens a transaction that takes the next position and appends an event for its own evaluation. */
  async function takePosition(evalId: string): Promise<string> {
    await writer.query('BEGIN');
    const { rows } = await writer.query<{ position: string }>(
      'UPDATE event_log_head SET position = position + 1 WHERE id = 1 RETURNING position::text',
    );
    const position = rows[0]?.position ?? expect.fail('no head row');
    await writer.query(
      `INSERT INTO evaluations (eval_id, status, code_hash, code_size, language, engine, timeout_seconds,
                                created_at, updated_at, revision)
       VALUES ($1, 'queued', repeat('0', 64), 1, 'python', 'docker', 1, now(), now(), 1)`,
      [evalId],
    );
    await writer.query(
      `INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, command_hash, recorded_at)
       VALUES ($1, $2, 1, 'EvaluationQueued', '{}', repeat('0', 64), now())`,
      [position, evalId],
    );
    return position;
  }

  /** True once an executor connection waits on a lock the writer holds. */
  async function executorBlockedByWriter(): Promise<boolean> {
    const { rows } = await h.sql.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE application_name = $1 AND wait_event_type = 'Lock' AND $2 = ANY(pg_blocking_pids(pid))`,
      [EXECUTOR_APPLICATION, writerPid],
    );
    return (rows[0]?.n ?? 0) > 0;
  }

  it('refuses UPDATE, DELETE and TRUNCATE on evaluation_events', async () => {
    const submitted = await h.commands.submit({ evalId: 'log-immutable' });
    for (const statement of [
      `UPDATE evaluation_events SET data = '{}' WHERE eval_id = 'log-immutable'`,
      `DELETE FROM evaluation_events WHERE eval_id = 'log-immutable'`,
      'TRUNCATE evaluation_events CASCADE',
    ]) {
      const err = await h.sql.query(statement).then(
        () => expect.fail(`${statement} succeeded`),
        (e: unknown) => e,
      );
      expect((err as Error).message, statement).to.match(/append-only/);
    }
    const events = await eventsOf(h.sql, 'log-immutable');
    expect(events).to.have.length(1);
    expect(events[0]?.position).to.equal(submitted.position);
    expect(events[0]?.data).to.have.property('codeHash');
  });

  it('makes a command wait for an earlier writer to commit, and gives it the next position', async () => {
    const taken = await takePosition('log-manual-commit');
    const command = track(h.commands.submit({ evalId: 'log-after-commit' }));

    await until('the command waits on the writer’s lock', executorBlockedByWriter);
    expect(command.settled(), 'the command is still waiting').to.equal(undefined);

    await writer.query('COMMIT');
    const outcome = await command.done;
    if (outcome.status === 'rejected') throw outcome.reason;
    expect(outcome.value.position).to.equal(String(BigInt(taken) + 1n));

    const log = await denseLog(h.sql);
    expect(log.problems).to.deep.equal([]);
    const { rows } = await h.sql.query<{ eval_id: string; position: string; tx: string }>(
      `SELECT eval_id, position::text, transaction_id::text AS tx FROM evaluation_events
        WHERE eval_id IN ('log-manual-commit', 'log-after-commit') ORDER BY evaluation_events.position`,
    );
    expect(rows.map((r) => [r.eval_id, r.position])).to.deep.equal([
      ['log-manual-commit', taken],
      ['log-after-commit', outcome.value.position],
    ]);
    expect(
      BigInt(rows[0]?.tx ?? 0) < BigInt(rows[1]?.tx ?? 0),
      'the earlier position belongs to the earlier transaction',
    ).to.equal(true);
  });

  it('gives a rolled-back writer’s position to the command that waited for it', async () => {
    const taken = await takePosition('log-manual-rollback');
    const command = track(h.commands.submit({ evalId: 'log-after-rollback' }));

    await until('the command waits on the writer’s lock', executorBlockedByWriter);
    expect(command.settled(), 'the command is still waiting').to.equal(undefined);

    await writer.query('ROLLBACK');
    const outcome = await command.done;
    if (outcome.status === 'rejected') throw outcome.reason;
    expect(outcome.value.position, 'the rolled-back position is reused').to.equal(taken);
    expect(await eventsOf(h.sql, 'log-manual-rollback')).to.have.length(0);
    expect((await denseLog(h.sql)).problems).to.deep.equal([]);
  });

  it('orders a change on an existing evaluation after the writer too', async () => {
    await h.commands.submit({ evalId: 'log-change' });
    const taken = await takePosition('log-manual-2');
    const command = track(h.commands.start({ evalId: 'log-change' }));

    await until('the command waits on the writer’s lock', executorBlockedByWriter);
    expect(command.settled()).to.equal(undefined);

    await writer.query('COMMIT');
    const outcome = await command.done;
    if (outcome.status === 'rejected') throw outcome.reason;
    expect(outcome.value).to.deep.include({ revision: '2', position: String(BigInt(taken) + 1n) });
    expect((await denseLog(h.sql)).problems).to.deep.equal([]);
  });
});
