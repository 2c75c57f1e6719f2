import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { createPostgresEvaluationSource } from '../../../services/query/postgres/event-log';
import { checkConsistency } from '../../../services/query/projection/consistency-check';
import { createKeyLayout } from '../../../services/query/read-models/keys';
import { call } from '../../support/clients';
import { createQueryHarness, type QueryHarness } from './harness';

/** A Redis of this spec's own (never the shared one): without persistence, so a restart loses everything. */
interface PrivateRedis {
  readonly url: string;
  start(): Promise<void>;
  kill(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

function privateRedis(port: number, dir: string): PrivateRedis {
  let child: ChildProcess | undefined;
  return {
    url: `redis://127.0.0.1:${port}/0`,
    async start() {
      const started = spawn(
        'redis-server',
        ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      child = started;
      await new Promise<void>((resolve, reject) => {
        let out = '';
        started.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
          out += chunk;
          if (out.includes('Ready to accept connections')) resolve();
        });
        started.once('exit', (code) => reject(new Error(`redis-server exited (${String(code)}): ${out}`)));
      });
    },
    async kill() {
      const running = child;
      child = undefined;
      if (running === undefined || running.exitCode !== null) return;
      const exited = new Promise((resolve) => running.once('exit', resolve));
      running.kill('SIGKILL');
      await exited;
    },
  };
}

describe('query projection across a Redis restart (a private Redis that loses its data)', function () {
  this.timeout(60_000);
  let h: QueryHarness;
  let redis: PrivateRedis;
  let dir: string;

  before(async () => {
    h = await createQueryHarness();
    dir = mkdtempSync(join(tmpdir(), 'crucible-redis-'));
    redis = privateRedis(await freePort(), dir);
    await redis.start();
  });
  after(async () => {
    await redis.kill();
    rmSync(dir, { recursive: true, force: true });
    await h.close();
  });

  it('reconnects, rebuilds what was lost, applies what was committed meanwhile, and serves again', async () => {
    for (let i = 0; i < 20; i += 1) await h.writer.submit(`rr-${i}`);
    const replica = await h.startReplica({
      overrides: { REDIS_URL: redis.url, REDIS_CLUSTER_NODES: '', CATCH_UP_INTERVAL_MS: '100' },
    });
    await replica.service.projector.whenCaughtUp();

    await redis.kill();
    // Commands keep working while Redis is down: they only need PostgreSQL.
    for (let i = 0; i < 10; i += 1) await h.writer.start(`rr-${i}`);
    const last = await h.writer.submit('rr-during');
    await redis.start();

    // The replica notices the empty Redis, turns NOT_SERVING, rebuilds, and serves again.
    const { evaluation } = await call(
      replica.client,
      replica.client.getEvaluation,
      { evalId: 'rr-during', minPosition: last.position },
      20_000,
    );
    expect(evaluation?.position).to.equal(last.position);
    await replica.service.projector.whenCaughtUp();
    const inspect = new Redis(redis.url);
    try {
      const report = await checkConsistency({
        source: createPostgresEvaluationSource(replica.pool),
        redis: inspect,
        layout: createKeyLayout(h.config.redisKeyPrefix, 1),
      });
      expect(report.differences).to.deep.equal([]);
      expect(report.partitionCheckpoints).to.deep.equal([BigInt(last.position)]);
    } finally {
      inspect.disconnect();
      await replica.close();
    }
  });
});
