import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { Client } from 'pg';
import { Redis } from 'ioredis';
import { startChild, type Child } from '../../tools/process';
import { call, createClients, type Clients } from '../support/clients';
import { waitForServing } from '../support/processes';
import { freePort, startPrivateStack, type PrivateStack } from '../support/private-servers';
import {
  cancelOpenStreams,
  COMMAND_SERVICE,
  describeFailures,
  expectReadModelsEqualLog,
  plansFor,
  pollUntil,
  QUERY_SERVICE,
  readEventLog,
  recordFirehose,
  runStep,
  startBurst,
  waitForProjection,
} from './harness';

const PROJECT_ROOT = join(__dirname, '..', '..', '..');

/** `make up` as a new user runs it (`npm run up`), its progress lines watched. */
interface StackUp {
  readonly child: Child;
  /** Resolves with the first line at index `from` or later that matches, and its index. */
  line(pattern: RegExp, from?: number): Promise<{ match: RegExpExecArray; index: number }>;
  /** Lines so far. */
  readonly count: number;
  /** The pid of the service's latest start (its "listening (pid N)" line). */
  servicePid(kind: 'command' | 'query', from?: number): Promise<{ pid: number; index: number }>;
  /** Ctrl-C's SIGTERM twin; resolves with the exit code. */
  stop(): Promise<number | null>;
}

async function stackUp(env: Record<string, string>): Promise<StackUp> {
  const lines: string[] = [];
  const waiting: { pattern: RegExp; from: number; resolve: (r: { match: RegExpExecArray; index: number }) => void }[] =
    [];
  const child = await startChild({
    command: process.execPath,
    args: [join(PROJECT_ROOT, 'dist', 'tools', 'stack', 'main.js'), 'up'],
    cwd: PROJECT_ROOT,
    env: { ...process.env, ...env },
    output: 'capture',
    captureLimit: Number.POSITIVE_INFINITY,
    onLine: (text) => {
      lines.push(text);
      for (const w of [...waiting]) {
        const match = w.pattern.exec(text);
        if (match !== null && lines.length - 1 >= w.from) {
          waiting.splice(waiting.indexOf(w), 1);
          w.resolve({ match, index: lines.length - 1 });
        }
      }
    },
  });
  const line: StackUp['line'] = (pattern, from = 0) => {
    for (let i = from; i < lines.length; i += 1) {
      const match = pattern.exec(lines[i] ?? '');
      if (match !== null) return Promise.resolve({ match, index: i });
    }
    const found = new Promise<{ match: RegExpExecArray; index: number }>((resolve) =>
      waiting.push({ pattern, from, resolve }),
    );
    // A stack that exits while a test waits on it fails the test with its output, not a timeout.
    return Promise.race([
      found,
      child.exited.then((status) => {
        throw new Error(`the stack exited (${JSON.stringify(status)}) before ${pattern}:\n${child.output()}`);
      }),
    ]);
  };
  return {
    child,
    line,
    get count() {
      return lines.length;
    },
    async servicePid(kind, from = 0) {
      const { match, index } = await line(
        new RegExp(`^\\[stack\\] ok ${kind} service listening \\(pid (\\d+)\\)`),
        from,
      );
      return { pid: Number(match[1]), index };
    },
    async stop() {
      return (await child.stop('SIGTERM', 60_000)).code;
    },
  };
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function redisPid(url: string): Promise<number> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    return Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1]);
  } finally {
    redis.disconnect();
  }
}

async function postgresPid(url: string): Promise<number> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    // The postmaster: the parent of this session's backend.
    const rows = await client.query<{ pid: string }>(
      `SELECT split_part(pg_read_file('postmaster.pid'), E'\\n', 1) AS pid`,
    );
    return Number(rows.rows[0]?.pid);
  } finally {
    await client.end();
  }
}

describe('fault: `make up` restarts what crashed and keeps the rest running', function () {
  this.timeout(300_000);

  describe('the services', () => {
    let stack: PrivateStack;
    let up: StackUp | undefined;
    let clients: Clients | undefined;

    before(async () => {
      stack = await startPrivateStack();
    });
    after(async () => {
      cancelOpenStreams();
      clients?.close();
      await up?.stop();
      await stack?.close();
    });

    it('kill -9 of either service: it comes back by itself, the other never stops, and nothing is lost', async () => {
      const [commandPort, queryPort] = [await freePort(), await freePort()];
      up = await stackUp({ ...stack.env, COMMAND_PORT: String(commandPort), QUERY_PORT: String(queryPort) });
      const command1 = await up.servicePid('command');
      const query1 = await up.servicePid('query');
      await up.line(/^\[stack\] ok up: command on/);
      clients = createClients(`127.0.0.1:${commandPort}`, `127.0.0.1:${queryPort}`);
      const { command, query } = clients;
      await waitForServing(`127.0.0.1:${queryPort}`, QUERY_SERVICE);

      // The query service dies during a burst: every command is still accepted.
      const burst = startBurst(command, plansFor('up', 600), { concurrency: 4 });
      await burst.whenSucceeded(150);
      process.kill(query1.pid, 'SIGKILL');
      const restartLine = await up.line(
        /^\[stack\] !! query service was killed by SIGKILL after [\d.]+s; restarting in 0\.5s/,
      );
      const query2 = await up.servicePid('query', restartLine.index);
      expect(query2.pid).to.not.equal(query1.pid);
      await burst.done;
      expect(burst.failures, describeFailures(burst.failures)).to.deep.equal([]);
      expect(isRunning(command1.pid), 'the command service was left running').to.equal(true);
      const log = await readEventLog(stack.databaseUrl);
      await waitForProjection(query, log[log.length - 1]?.position ?? 0n, 60_000);
      await expectReadModelsEqualLog(stack.env, stack.databaseUrl);

      // The command service dies: the query side keeps serving reads and its open streams.
      const firehose = recordFirehose(query, { afterPosition: (log[log.length - 1]?.position ?? 0n).toString() });
      await firehose.whenCaughtUp();
      const before = up.count;
      process.kill(command1.pid, 'SIGKILL');
      await up.line(/^\[stack\] !! command service was killed by SIGKILL/, before);
      const read = await call(query, query.getEvaluation, { evalId: 'up-0' }, 5_000);
      expect(read.evaluation?.evalId).to.equal('up-0');
      const command2 = await up.servicePid('command', before);
      expect(command2.pid).to.not.equal(command1.pid);
      await waitForServing(`127.0.0.1:${commandPort}`, COMMAND_SERVICE);
      const submitted = await runStep(command, 'after-command-restart', 'submit');
      await firehose.whenReached(BigInt(submitted.position));
      expect(firehose.updates.map((u) => u.evaluation?.evalId)).to.deep.equal(['after-command-restart']);
      expect(isRunning(query2.pid), 'the query service was left running').to.equal(true);

      // SIGTERM stops what the stack started, and nothing else.
      expect(await up.stop()).to.equal(0);
      up = undefined;
      expect(isRunning(command2.pid) || isRunning(query2.pid), 'services left behind').to.equal(false);
      expect(await redisPid(stack.env.REDIS_URL as string), 'the Redis it did not start').to.be.above(0);
    });
  });

  describe('the servers it started', () => {
    let dataDir: string;
    let up: StackUp | undefined;
    let clients: Clients | undefined;

    before(() => {
      dataDir = mkdtempSync(join(tmpdir(), 'crucible-stack-up-'));
    });
    after(async () => {
      clients?.close();
      await up?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    });

    it('kill -9 of the PostgreSQL and the Redis it started: each is restarted, PostgreSQL with its data', async () => {
      const [pgPort, redisPort, commandPort, queryPort] = [
        await freePort(),
        await freePort(),
        await freePort(),
        await freePort(),
      ];
      const databaseUrl = `postgres://postgres@127.0.0.1:${pgPort}/crucible`;
      const redisUrl = `redis://127.0.0.1:${redisPort}/0`;
      up = await stackUp({
        ENVIRONMENT: 'test',
        STACK_DATA_DIR: dataDir,
        DATABASE_URL: databaseUrl,
        REDIS_URL: redisUrl,
        COMMAND_PORT: String(commandPort),
        QUERY_PORT: String(queryPort),
        CATCH_UP_INTERVAL_MS: '200',
      });
      await up.line(/^\[stack\] ok up: command on/, 0);
      clients = createClients(`127.0.0.1:${commandPort}`, `127.0.0.1:${queryPort}`);
      const { command, query } = clients;
      await waitForServing(`127.0.0.1:${commandPort}`, COMMAND_SERVICE, 60_000);
      await runStep(command, 'kept-0', 'submit');

      // Redis: restarted empty (no persistence); the query side rebuilds from the log.
      const redisBefore = await redisPid(redisUrl);
      let from = up.count;
      process.kill(redisBefore, 'SIGKILL');
      await up.line(/^\[stack\] !! redis: redis-server on .* was killed by SIGKILL after [\d.]+s; restarting in/, from);
      await up.line(/^\[stack\] !! redis: redis-server on .* restarted/, from);
      expect(await redisPid(redisUrl)).to.not.equal(redisBefore);
      // No event crosses the processes for "rebuilt": ask until the evaluation is read back.
      await pollUntil(
        'the query side to rebuild from the log',
        async () => {
          try {
            const kept = await call(query, query.getEvaluation, { evalId: 'kept-0' }, 2_000);
            return kept.evaluation?.evalId === 'kept-0';
          } catch {
            return false;
          }
        },
        60_000,
        100,
      );

      // PostgreSQL: restarted on the same data directory; what was written is still there.
      const postgresBefore = await postgresPid(databaseUrl);
      from = up.count;
      process.kill(postgresBefore, 'SIGKILL');
      await up.line(/^\[stack\] !! postgres: postgres on .* exited after [\d.]+s; restarting in/, from);
      await up.line(/^\[stack\] !! postgres: postgres on .* restarted/, from);
      expect(await postgresPid(databaseUrl)).to.not.equal(postgresBefore);
      // The command service's pool reconnects by itself; its first command after may still meet
      // a dead connection and be refused as UNAVAILABLE, which a client retries.
      let second;
      for (let attempt = 1; second === undefined; attempt += 1) {
        try {
          second = await runStep(command, 'kept-1', 'submit');
        } catch (err) {
          if (attempt >= 20) throw err;
          await waitForServing(`127.0.0.1:${commandPort}`, COMMAND_SERVICE, 10_000);
        }
      }
      const log = await readEventLog(databaseUrl);
      expect(log.map((e) => e.evalId)).to.deep.equal(['kept-0', 'kept-1']);
      await waitForProjection(query, BigInt(second.position), 60_000);

      expect(await up.stop()).to.equal(0);
      up = undefined;
    });
  });
});
