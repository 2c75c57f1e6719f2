import { openAccess } from '../../../shared/grpc';
import { credentials, status as GrpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { Client, type Pool } from 'pg';
import type { PostgresSessionConfig } from '../../../shared/config';
import { CommitOutcomeUnknownError, UnavailableError } from '../../../shared/errors';
import {
  EvaluationCommandServiceClient,
  SubmitEvaluationRequest,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import { createCallLog, toStatus } from '../../../shared/grpc';
import { silentLogger } from '../../../shared/logging';
import { createPool } from '../../../shared/postgres';
import type { CommandExecutor } from '../../../services/command/application/command-executor';
import type { AppendRequest, EvaluationStore } from '../../../services/command/application/ports';
import { validateSubmit, type SubmitEvaluation } from '../../../services/command/domain';
import { createPostgresEvaluationStore } from '../../../services/command/postgres/evaluation-store';
import { createCommandServer } from '../../../services/command/server';
import { call, expectError } from '../../support/clients';
import { startService } from '../../support/processes';
import { startTcpProxy, type TcpProxy } from '../../support/tcp-proxy';
import { commandsOf, createHarness, denseLog, eventCount, until, type Harness } from './harness';

/**
 * PostgreSQL that hangs or answers ambiguously: every session bounded, a held append lock
 * refused in bounded time, a write cut off at its call's deadline, a commit whose answer was
 * lost read back rather than reported as "nothing written", and a read-only session refused
 * as UNAVAILABLE. Each forces its fault at a known point (a lock held by another session, a
 * proxy that loses answers) and checks the database's own view.
 */

/** Application name of this spec's pools, to find their sessions in pg_stat_activity. */
const APP = 'crucible-it-timeouts';

/**
 * The kernel's timer on the TCP connection from local port `port` to `serverPort` (Linux: /proc/net/tcp, field
 * `tr:tm->when`): its kind (2 is keepalive) and the seconds until it fires (clock ticks of 1/100 s).
 */
function socketTimer(port: number, serverPort: number): { kind: number; seconds: number } | undefined {
  const portOf = (address: string): number => parseInt(address.split(':')[1] ?? '', 16);
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const [, local, remote, state, , timer] = line.trim().split(/\s+/);
      if (local === undefined || remote === undefined || timer === undefined) continue;
      // The live connection only (state 01, ESTABLISHED, to the server): an earlier socket that
      // had the same local port may linger in TIME_WAIT (timer kind 3), as CI once found.
      if (state !== '01' || portOf(local) !== port || portOf(remote) !== serverPort) continue;
      const [kind = '', when = ''] = timer.split(':');
      return { kind: parseInt(kind, 16), seconds: parseInt(when, 16) / 100 };
    }
  }
  return undefined;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => expect.fail(`expected a rejection, got ${JSON.stringify(value)}`),
    (err: unknown) => err,
  );
}

describe('PostgreSQL hangs and ambiguity', function () {
  this.timeout(30_000);
  let h: Harness;
  const pools: Pool[] = [];

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    for (const pool of pools) await pool.end();
    await h.close();
  });

  afterEach(async () => {
    expect((await denseLog(h.sql)).problems, 'event log stays dense').to.deep.equal([]);
  });

  const submitOf = (evalId: string | undefined, requestId?: string): SubmitEvaluation =>
    validateSubmit(
      SubmitEvaluationRequest.fromPartial({
        code: 'print(1)',
        language: 'python',
        engine: 'docker',
        timeoutSeconds: 30,
        ...(evalId !== undefined ? { evalId } : {}),
        ...(requestId !== undefined ? { requestId } : {}),
      }),
      h.env.config.limits,
    );

  /** A pool of this spec's (found by APP), with the session settings given over the defaults. */
  function poolWith(session: Partial<PostgresSessionConfig>, url = h.env.config.databaseUrl): Pool {
    const pool = createPool({
      url,
      applicationName: APP,
      poolSize: 4,
      session: { ...h.env.config.postgres, ...session },
    });
    pools.push(pool);
    return pool;
  }

  /**
   * A pool with a session open already: a submit of a new id writes without loading first, and
   * its write must not be what opens the connection (whose handshake a test's proxy would drop).
   */
  async function connectedPool(url: string): Promise<Pool> {
    const pool = poolWith({}, url);
    await pool.query('SELECT 1');
    return pool;
  }

  function executorOver(pool: Pool, wrap: (store: EvaluationStore) => EvaluationStore = (s) => s): CommandExecutor {
    return h.executorWith({ store: wrap(createPostgresEvaluationStore(pool)) });
  }

  /** Another session holds the append lock (event_log_head's row) until `release`. */
  async function holdAppendLock(): Promise<{ release(): Promise<void> }> {
    const holder = new Client({ connectionString: h.env.config.databaseUrl, application_name: 'crucible-it-holder' });
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query('SELECT position FROM event_log_head WHERE id = 1 FOR UPDATE');
    return {
      async release() {
        await holder.query('ROLLBACK');
        await holder.end();
      },
    };
  }

  /** Sessions of this spec's pools waiting for a lock, by the database's own account. */
  async function waitingForLock(): Promise<number[]> {
    const { rows } = await h.sql.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
      [APP],
    );
    return rows.map((r) => r.pid);
  }

  /** Sessions of this spec's pools running a statement (none: nothing of theirs is left to commit). */
  async function active(): Promise<number> {
    const { rows } = await h.sql.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`,
      [APP],
    );
    return rows[0]?.n ?? 0;
  }

  async function evaluationExists(evalId: string): Promise<boolean> {
    const { rowCount } = await h.sql.query('SELECT 1 FROM evaluations WHERE eval_id = $1', [evalId]);
    return rowCount === 1;
  }

  describe('every session', () => {
    it('is opened with the configured timeouts, and TCP keepalive on its socket', async () => {
      const pool = poolWith({
        statementTimeoutMs: 1500,
        lockTimeoutMs: 250,
        idleInTransactionTimeoutMs: 2000,
        keepAliveDelayMs: 7000,
      });
      const { rows } = await pool.query<{ statement: string; lock: string; idle: string; port: number }>(
        `SELECT current_setting('statement_timeout') AS statement, current_setting('lock_timeout') AS lock,
                current_setting('idle_in_transaction_session_timeout') AS idle, inet_client_port() AS port`,
      );
      expect(rows[0]).to.deep.include({ statement: '1500ms', lock: '250ms', idle: '2s' });
      // The kernel's view of that session's socket: a keepalive timer, due within the delay.
      const timer = socketTimer(rows[0]?.port ?? 0, Number(new URL(h.env.config.databaseUrl).port || 5432));
      expect(timer, 'the socket of that session').to.not.equal(undefined);
      expect(timer?.kind, 'timer kind 2: keepalive').to.equal(2);
      expect(timer?.seconds).to.be.at.most(7);
    });

    it('is ended when it idles inside a transaction, and the append lock it held is freed', async () => {
      const pool = poolWith({ idleInTransactionTimeoutMs: 200 });
      const session = await pool.connect();
      const ended = new Promise<Error>((resolve) => session.once('error', resolve));
      await session.query('BEGIN');
      await session.query('SELECT position FROM event_log_head WHERE id = 1 FOR UPDATE');
      const err = await ended;
      session.release(err);
      expect((err as Error & { code?: string }).code).to.equal('25P03');
      // The lock went with it: a command now appends.
      expect((await commandsOf(h.executor, h.env.config.limits).submit({ evalId: 'after-idle' })).revision).to.equal(
        '1',
      );
    });
  });

  describe('a session stuck holding the append lock', () => {
    it('refuses a command waiting on it with UNAVAILABLE within lock_timeout, writing nothing; once released, the next command succeeds', async () => {
      const commands = commandsOf(executorOver(poolWith({ lockTimeoutMs: 300 })), h.env.config.limits);
      await commands.submit({ evalId: 'lock-before' });
      const count = await eventCount(h.sql);
      const holder = await holdAppendLock();
      try {
        for (const attempt of [
          () => commands.submit({ evalId: 'lock-refused' }),
          () => commands.start({ evalId: 'lock-before' }),
        ]) {
          const startedAt = Date.now();
          const err = await rejection(attempt());
          expect(Date.now() - startedAt, 'refused within lock_timeout, not at the end of the test').to.be.below(3000);
          expect(err).to.be.instanceOf(UnavailableError);
          expect(err).to.not.be.instanceOf(CommitOutcomeUnknownError);
          expect(toStatus(err, createCallLog(silentLogger), 'test').code).to.equal(GrpcStatus.UNAVAILABLE);
          expect((err as Error).message).to.match(/waited longer than lock_timeout .*append lock, event_log_head/);
          expect((err as Error).message).to.include('nothing was written');
        }
        expect(await waitingForLock(), 'no session of ours still waits').to.deep.equal([]);
      } finally {
        await holder.release();
      }
      expect(await eventCount(h.sql)).to.equal(count);
      expect(await evaluationExists('lock-refused')).to.equal(false);
      expect((await commands.submit({ evalId: 'lock-after' })).revision).to.equal('1');
      expect((await commands.start({ evalId: 'lock-before' })).revision).to.equal('2');
    });
  });

  describe("a command whose call's deadline passes", () => {
    it('is cancelled by PostgreSQL at the deadline, long before lock_timeout, and never commits later', async () => {
      const executor = executorOver(poolWith({ lockTimeoutMs: 20_000 }));
      const holder = await holdAppendLock();
      try {
        const startedAt = Date.now();
        const err = await rejection(
          executor.execute(submitOf('deadline-passed'), { deadline: new Date(Date.now() + 400) }),
        );
        expect(Date.now() - startedAt, 'ended at the deadline').to.be.within(300, 3000);
        expect(err).to.be.instanceOf(UnavailableError);
        expect((err as Error).message).to.match(/did not finish before the call's deadline .*nothing was written/);
        // PostgreSQL ended the statement itself: no session of ours waits to commit it.
        expect(await waitingForLock()).to.deep.equal([]);
      } finally {
        await holder.release();
      }
      await until('our sessions are idle', async () => (await active()) === 0);
      expect(await evaluationExists('deadline-passed')).to.equal(false);
    });

    it('is bounded through gRPC too: the client hears DEADLINE_EXCEEDED and nothing commits after it', async () => {
      const server = createCommandServer({
        access: openAccess(silentLogger),
        executor: executorOver(poolWith({ lockTimeoutMs: 20_000 })),
        limits: h.env.config.limits,
        logger: silentLogger,
      });
      const port = await server.listen('127.0.0.1', 0);
      const client = new EvaluationCommandServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
      const holder = await holdAppendLock();
      try {
        const request = SubmitEvaluationRequest.fromPartial({
          evalId: 'grpc-deadline',
          code: 'print(1)',
          language: 'python',
          engine: 'docker',
          timeoutSeconds: 30,
        });
        const err = await expectError(call(client, client.submitEvaluation, request, 500));
        expect(err.code).to.equal(GrpcStatus.DEADLINE_EXCEEDED);
        // The write waited on the lock and PostgreSQL cancelled it (a round trip per probe; 3 s
        // is far below the 20 s lock_timeout that would end it otherwise).
        await until('no session of ours waits on the lock', async () => (await waitingForLock()).length === 0, 3000);
      } finally {
        await holder.release();
        client.close();
      }
      await until('our sessions are idle', async () => (await active()) === 0);
      expect(await evaluationExists('grpc-deadline')).to.equal(false);
      await server.shutdown(1000);
    });
  });

  describe('a write whose answer is lost', () => {
    let proxy: TcpProxy;
    let proxiedUrl: string;

    before(async () => {
      const url = new URL(h.env.config.databaseUrl);
      proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
      url.port = String(proxy.port);
      proxiedUrl = url.toString();
    });

    after(async () => {
      await proxy.close();
    });

    /**
     * The store, but the answer to its first append is lost after the write committed: the
     * proxy drops what PostgreSQL sends, the test waits for the row in the database, then cuts
     * the connection (and runs `then`, e.g. making PostgreSQL unreachable).
     */
    function loseFirstAnswer(then: () => void = () => undefined): (store: EvaluationStore) => EvaluationStore {
      let armed = true;
      return (store) => ({
        load: (evalId, requestId, tenant) => store.load(evalId, requestId, tenant),
        async append(request: AppendRequest) {
          if (!armed) return store.append(request);
          armed = false;
          proxy.dropReplies();
          const appending = store.append(request);
          appending.catch(() => undefined);
          const { evalId, toRevision } = request.decision;
          await until('the write committed', async () => {
            const { rowCount } = await h.sql.query(
              'SELECT 1 FROM evaluation_events WHERE eval_id = $1 AND revision = $2',
              [evalId, toRevision],
            );
            return rowCount === 1;
          });
          then();
          proxy.cut();
          return appending;
        },
      });
    }

    for (const deadline of [undefined, 'with a deadline'] as const) {
      it(`reads it back and answers as committed, writing once (${deadline ?? 'autocommitted'})`, async () => {
        const executor = executorOver(await connectedPool(proxiedUrl), loseFirstAnswer());
        const count = await eventCount(h.sql);
        const result = await executor.execute(
          submitOf(undefined),
          deadline === undefined ? {} : { deadline: new Date(Date.now() + 10_000) },
        );
        const { rows } = await h.sql.query<{ position: string }>(
          'SELECT position::text FROM evaluation_events WHERE eval_id = $1',
          [result.evalId],
        );
        expect(rows).to.deep.equal([{ position: result.position }]);
        expect(await eventCount(h.sql)).to.equal(count + 1);
      });
    }

    it('says the outcome is unknown when PostgreSQL cannot be reached to read it back; a retry with the request_id answers it', async () => {
      const executor = executorOver(
        await connectedPool(proxiedUrl),
        loseFirstAnswer(() => proxy.refuse()),
      );
      try {
        const err = await rejection(executor.execute(submitOf(undefined, 'req-unknown')));
        expect(err).to.be.instanceOf(CommitOutcomeUnknownError);
        expect(toStatus(err, createCallLog(silentLogger), 'test').code).to.equal(GrpcStatus.UNAVAILABLE);
        expect((err as Error).message).to.include('the outcome is unknown');
        expect((err as Error).message).to.include('a retry with the same request_id is safe and answers what happened');
        expect((err as Error).message).to.not.include('nothing was written');
      } finally {
        proxy.accept();
      }
      const evalId = h.issuedIds[h.issuedIds.length - 1] ?? '';
      expect(await evaluationExists(evalId), 'it had committed').to.equal(true);
      const retried = await h.executor.execute(submitOf(undefined, 'req-unknown'));
      expect(retried.evalId).to.equal(evalId);
      const { rows } = await h.sql.query('SELECT 1 FROM evaluations WHERE eval_id = $1', [evalId]);
      expect(rows).to.have.length(1);
    });

    it('names the id a submit without request_id or eval_id would have, and says a blind retry may duplicate', async () => {
      const executor = executorOver(
        await connectedPool(proxiedUrl),
        loseFirstAnswer(() => proxy.refuse()),
      );
      try {
        const err = await rejection(executor.execute(submitOf(undefined)));
        const evalId = h.issuedIds[h.issuedIds.length - 1] ?? '';
        expect(err).to.be.instanceOf(CommitOutcomeUnknownError);
        expect((err as Error).message).to.include(`its eval_id is "${evalId}"`);
        expect((err as Error).message).to.include('a retry without request_id or eval_id may create a duplicate');
        expect(await evaluationExists(evalId)).to.equal(true);
      } finally {
        proxy.accept();
      }
    });
  });

  describe('a session ended while its write waits', () => {
    it('is read back (the write had not committed), written again, and answered once the lock frees', async () => {
      const commands = commandsOf(executorOver(poolWith({ lockTimeoutMs: 20_000 })), h.env.config.limits);
      const holder = await holdAppendLock();
      let released = false;
      try {
        const submitted = commands.submit({ evalId: 'terminated' });
        submitted.catch(() => undefined);
        await until('the write waits on the append lock', async () => (await waitingForLock()).length === 1);
        const [first] = await waitingForLock();
        await h.sql.query('SELECT pg_terminate_backend($1)', [first]);
        // The executor heard FATAL (57P01) for a write that was sent: outcome unknown, so it
        // reads back, finds nothing, and writes again on a new session, which waits in turn.
        await until('the write waits again, on another session', async () => {
          const waiting = await waitingForLock();
          return waiting.length === 1 && waiting[0] !== first;
        });
        await holder.release();
        released = true;
        expect((await submitted).revision).to.equal('1');
      } finally {
        if (!released) await holder.release();
      }
      const { rows } = await h.sql.query('SELECT 1 FROM evaluation_events WHERE eval_id = $1', ['terminated']);
      expect(rows).to.have.length(1);
    });
  });

  describe('a session on a read-only standby', () => {
    it('makes the command service answer UNAVAILABLE naming the cause, and write again once the database is writable', async () => {
      const database = new URL(h.env.config.databaseUrl).pathname.slice(1);
      await h.sql.query(`ALTER DATABASE ${database} SET default_transaction_read_only = on`);
      let service: Awaited<ReturnType<typeof startService>> | undefined;
      let client: EvaluationCommandServiceClient | undefined;
      try {
        // Started now, so that every session it opens is read-only, as on a standby.
        service = await startService('command', h.env.env);
        client = new EvaluationCommandServiceClient(service.address, credentials.createInsecure());
        const request = SubmitEvaluationRequest.fromPartial({
          evalId: 'read-only',
          code: 'print(1)',
          language: 'python',
          engine: 'docker',
          timeoutSeconds: 30,
        });
        const count = await eventCount(h.sql);
        const err = await expectError(call(client, client.submitEvaluation, request));
        expect(err.code).to.equal(GrpcStatus.UNAVAILABLE);
        expect(err.details).to.match(/session is read-only \(a standby, or default_transaction_read_only is on\)/);
        expect(err.details).to.include('nothing was written');
        expect(await eventCount(h.sql)).to.equal(count);

        await h.sql.query(`ALTER DATABASE ${database} SET default_transaction_read_only = off`);
        // The session that refused the write was dropped: the next one is writable.
        const done = await call(client, client.submitEvaluation, request);
        expect(done.revision).to.equal('1');
      } finally {
        await h.sql.query(`ALTER DATABASE ${database} RESET default_transaction_read_only`);
        client?.close();
        await service?.stop();
      }
    });
  });
});
