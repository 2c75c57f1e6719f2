import { expect } from 'chai';
import { Client } from 'pg';
import { createPostgresEvaluationStore } from '../../../services/command/postgres/evaluation-store';
import type { EvaluationStore } from '../../../services/command/application/ports';
import type { CommandResult, SubmitEvaluation } from '../../../services/command/domain';
import { CommitOutcomeUnknownError, UnavailableError } from '../../../shared/errors';
import {
  commandsOf,
  createHarness,
  denseLog,
  eventsOf,
  handWrittenRequest,
  racingStore,
  until,
  type Harness,
} from './harness';

/**
 * Group commit (services/command/postgres/batch-append.ts) against a real PostgreSQL: batches
 * are forced, not hoped for. racingStore holds every racer's load until all have loaded, so
 * their writes reach the store in one turn and go as one batch (submits of new ids load
 * nothing first: started in one turn, they reach the store in one turn by themselves); a transaction of the test's own
 * holding `event_log_head` holds a batch in flight where needed. `onBatch` says how the store
 * grouped them.
 */
/** `store` with its first `parties` appends held until all have come, then sent in one turn: one batch. */
function appendingTogether(store: EvaluationStore, parties: number): EvaluationStore {
  const held: (() => void)[] = [];
  let released = false;
  return {
    ...store,
    append: (request) => {
      if (released) return store.append(request);
      return new Promise((resolve, reject) => {
        held.push(() => void store.append(request).then(resolve, reject));
        if (held.length < parties) return;
        released = true;
        for (const send of held.splice(0)) send();
      });
    },
  };
}

describe('command executor: group commit', function () {
  this.timeout(60_000);
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    await h?.close();
  });

  /** The executor over a store of its own that records each batch's size, with the first `parties` loads raced. */
  function batching(parties: number): { commands: ReturnType<typeof commandsOf>; batches: number[] } {
    const batches: number[] = [];
    const store = createPostgresEvaluationStore(h.pool, { onBatch: (size) => batches.push(size) });
    const race = racingStore(store, parties);
    return { commands: commandsOf(h.executorWith({ store: race.store }), h.env.config.limits), batches };
  }

  async function settledAll<T>(work: Promise<T>[]): Promise<{ values: T[]; errors: unknown[] }> {
    const settled = await Promise.allSettled(work);
    return {
      values: settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : [])),
      errors: settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : [])),
    };
  }

  it('writes 32 commands that arrive together as one transaction, each at its own dense position', async () => {
    const { commands, batches } = batching(0);
    const { values, errors } = await settledAll(
      Array.from({ length: 32 }, (_, i) => commands.submit({ evalId: `together-${i}` })),
    );
    expect(errors).to.deep.equal([]);
    expect(batches).to.deep.equal([32]);
    const positions = values.map((v) => BigInt(v.position)).sort((a, b) => (a < b ? -1 : 1));
    for (let i = 1; i < positions.length; i += 1) expect(positions[i]).to.equal(positions[i - 1]! + 1n);
    for (const [i, value] of values.entries()) {
      expect((await eventsOf(h.sql, `together-${i}`)).map((e) => e.position)).to.deep.equal([value.position]);
    }
    // One transaction: every event of the batch has the same writing transaction.
    const { rows } = await h.sql.query<{ n: number }>(
      `SELECT count(DISTINCT transaction_id)::int AS n FROM evaluation_events WHERE eval_id LIKE 'together-%'`,
    );
    expect(rows[0]?.n).to.equal(1);
    expect((await denseLog(h.sql)).problems).to.deep.equal([]);
  });

  it('decides a command whose evaluation an earlier member changed again, against the state that member left', async () => {
    await h.commands.submit({ evalId: 'one-eval' });
    await h.commands.start({ evalId: 'one-eval', executorId: 'exec-1' });
    const { commands, batches } = batching(8);
    // Eight metric reports of one evaluation, all decided at revision 2: the batch writes the
    // first; each other finds the revision moved, writes nothing, and is decided again.
    const { values, errors } = await settledAll(
      Array.from({ length: 8 }, (_, i) =>
        commands.recordMetrics({
          evalId: 'one-eval',
          metrics: [{ name: 'loss', value: i, unit: '', step: String(i) }],
        }),
      ),
    );
    expect(errors).to.deep.equal([]);
    expect(batches[0]).to.equal(8);
    expect(values.map((v) => v.revision).sort((a, b) => Number(a) - Number(b))).to.deep.equal([
      '3',
      '4',
      '5',
      '6',
      '7',
      '8',
      '9',
      '10',
    ]);
    const { rows } = await h.sql.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM evaluation_metrics WHERE eval_id = 'one-eval'`,
    );
    expect(rows[0]?.n).to.equal(8);
    expect((await denseLog(h.sql)).problems).to.deep.equal([]);
  });

  it('tells a second command with a request id already in its batch that it conflicts, without sending it', async () => {
    const { commands, batches } = batching(0);
    const settled = await Promise.allSettled([
      commands.submit({ evalId: 'dedup-0' }),
      commands.submit({ evalId: 'dedup-1', requestId: 'dedup-shared' }),
      commands.submit({ evalId: 'dedup-2' }),
      commands.submit({ evalId: 'dedup-3', requestId: 'dedup-shared' }),
    ]);
    expect(batches[0]).to.equal(4);
    for (const i of [0, 2]) expect(settled[i]?.status, `dedup-${i}`).to.equal('fulfilled');
    // The first of the two took the request id; the second, decided again, finds it another
    // command's and is refused, having written nothing.
    const [winner, loser] = settled[1]?.status === 'fulfilled' ? ['dedup-1', 'dedup-3'] : ['dedup-3', 'dedup-1'];
    expect(settled.filter((r) => r.status === 'rejected')).to.have.length(1);
    expect(await eventsOf(h.sql, winner)).to.have.length(1);
    expect(await eventsOf(h.sql, loser)).to.have.length(0);
    expect((await denseLog(h.sql)).problems).to.deep.equal([]);
  });

  describe('with a batch held in flight', () => {
    // pg_stat_activity is read once per transaction: the lock holder cannot watch the waiters.
    let monitor: Client;

    before(async () => {
      monitor = new Client({
        connectionString: h.env.config.databaseUrl,
        application_name: 'crucible-group-commit-it',
      });
      await monitor.connect();
    });

    after(async () => {
      await monitor?.end();
    });

    /** Takes the append lock in a transaction of the test's own, as another instance's batch would. */
    async function holdAppendLock(): Promise<{ pid: number; release: () => Promise<void> }> {
      const holder = h.sql;
      const pid = Number((await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid);
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM event_log_head WHERE id = 1 FOR UPDATE');
      return { pid, release: async () => void (await holder.query('COMMIT')) };
    }

    async function blockedBatches(holderPid: number): Promise<number[]> {
      const { rows } = await monitor.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity
          WHERE application_name = $1 AND wait_event_type = 'Lock' AND $2 = ANY (pg_blocking_pids(pid))`,
        [h.pool.options.application_name, holderPid],
      );
      return rows.map((r) => r.pid);
    }

    async function waitingForLocks(): Promise<number> {
      const { rows } = await monitor.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
        [h.pool.options.application_name],
      );
      return rows[0]?.n ?? 0;
    }

    it("never fails a neighbour: a member whose request id another instance's batch took first is a plain conflict, and one whose own row PostgreSQL refuses is taken out and the batch goes again without it", async () => {
      // Two stores are two command instances. Each holds a batch at the append lock; the first
      // to get it takes request id iso-shared. In the second, the member with that request id
      // finds it logged (its statement checks) and changes nothing; the member whose row breaks
      // a CHECK (23514) aborts that whole transaction, and is taken out.
      const first = createPostgresEvaluationStore(h.pool);
      const secondBatches: number[] = [];
      const second = appendingTogether(
        createPostgresEvaluationStore(h.pool, { onBatch: (size) => secondBatches.push(size) }),
        4,
      );
      const firstCommands = commandsOf(h.executorWith({ store: first }), h.env.config.limits);
      const secondCommands = commandsOf(h.executorWith({ store: second }), h.env.config.limits);
      const lock = await holdAppendLock();
      let released = false;
      try {
        const winner = firstCommands.submit({ evalId: 'iso-winner', requestId: 'iso-shared' });
        await until('the first batch waits for the lock', async () => (await blockedBatches(lock.pid)).length === 1);
        const neighbours = [
          secondCommands.submit({ evalId: 'iso-0' }),
          secondCommands.submit({ evalId: 'iso-loser', requestId: 'iso-shared' }),
          // A revision the evaluations table's CHECK refuses (23514): a row PostgreSQL refuses.
          second.append(handWrittenRequest({ submit: 'iso-refused', toRevision: '0' })),
          secondCommands.submit({ evalId: 'iso-1' }),
        ];
        // It queues behind the first waiter (pg_blocking_pids names that waiter, not the holder).
        await until('the second batch waits too', async () => (await waitingForLocks()) === 2);
        await lock.release();
        released = true;
        expect((await winner).evalId).to.equal('iso-winner');
        const settled = await Promise.allSettled(neighbours);
        expect(secondBatches[0]).to.equal(4);
        expect(settled.map((r) => r.status)).to.deep.equal(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
        expect(String((settled[2] as PromiseRejectedResult).reason)).to.match(/check constraint/i);
      } finally {
        if (!released) await lock.release();
      }
      expect(await eventsOf(h.sql, 'iso-0')).to.have.length(1);
      expect(await eventsOf(h.sql, 'iso-1')).to.have.length(1);
      expect(await eventsOf(h.sql, 'iso-loser')).to.have.length(0);
      expect(await eventsOf(h.sql, 'iso-refused')).to.have.length(0);
      // The two neighbours were written by one transaction: the batch sent again without the refused member.
      const { rows } = await h.sql.query<{ n: number }>(
        `SELECT count(DISTINCT transaction_id)::int AS n FROM evaluation_events WHERE eval_id IN ('iso-0', 'iso-1')`,
      );
      expect(rows[0]?.n).to.equal(1);
      expect((await denseLog(h.sql)).problems).to.deep.equal([]);
    });

    it('refuses the member whose deadline the batch outlasts, and writes its neighbour once the lock is free', async () => {
      const batches: number[] = [];
      const store = createPostgresEvaluationStore(h.pool, { onBatch: (size) => batches.push(size) });
      const race = racingStore(store, 0);
      const executor = h.executorWith({ store: race.store });
      const lock = await holdAppendLock();
      let released = false;
      try {
        const submit = (evalId: string, deadline?: Date): Promise<CommandResult> =>
          executor.execute(
            {
              type: 'SubmitEvaluation',
              evalId,
              code: 'print(1)',
              language: 'python',
              engine: 'docker',
              timeoutSeconds: 30,
              metadata: {},
            } satisfies SubmitEvaluation,
            deadline !== undefined ? { deadline } : {},
          );
        const patient = submit('patient-0');
        const hurried = submit('hurried-0', new Date(Date.now() + 1500));
        const err = await hurried.then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).to.be.instanceOf(UnavailableError);
        expect((err as Error).message).to.match(/did not finish before the call's deadline/);
        expect(batches[0]).to.equal(2);
        // The patient one went again, alone, and waits for the lock.
        await until('the retried batch waits for the lock', async () => (await blockedBatches(lock.pid)).length === 1);
        await lock.release();
        released = true;
        expect((await patient).revision).to.equal('1');
        expect(await eventsOf(h.sql, 'hurried-0')).to.have.length(0);
      } finally {
        if (!released) await lock.release();
      }
      expect((await denseLog(h.sql)).problems).to.deep.equal([]);
    });

    it('loses nothing when the batch session is killed mid-write: each member learns its outcome again and is written once', async () => {
      const batches: number[] = [];
      const store = createPostgresEvaluationStore(h.pool, { onBatch: (size) => batches.push(size) });
      const race = racingStore(store, 0);
      const commands = commandsOf(h.executorWith({ store: race.store }), h.env.config.limits);
      const lock = await holdAppendLock();
      let released = false;
      try {
        const work = Array.from({ length: 5 }, (_, i) => commands.submit({ evalId: `killed-${i}` }));
        let blocked: number[] = [];
        await until(
          'the batch waits for the lock',
          async () => (blocked = await blockedBatches(lock.pid)).length === 1,
        );
        await monitor.query('SELECT pg_terminate_backend($1)', [blocked[0]]);
        await lock.release();
        released = true;
        const { values, errors } = await settledAll(work);
        // Each read its write back (not committed) and wrote it again.
        expect(errors.filter((e) => !(e instanceof CommitOutcomeUnknownError))).to.deep.equal([]);
        expect(values).to.have.length(5);
      } finally {
        if (!released) await lock.release();
      }
      expect(batches[0]).to.equal(5);
      for (let i = 0; i < 5; i += 1) expect(await eventsOf(h.sql, `killed-${i}`)).to.have.length(1);
      expect((await denseLog(h.sql)).problems).to.deep.equal([]);
    });
  });
});
