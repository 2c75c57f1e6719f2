import { expect } from 'chai';
import { status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { createKeyLayout, type KeyLayout } from '../../services/query/read-models/keys';
import { call, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import { deleteKeys } from '../support/redis-keys';
import {
  expectReadModelsEqualLog,
  QUERY_SERVICE,
  readEvaluations,
  readEventLog,
  Recorder,
  recordHealth,
  runBurst,
  runStep,
  startFaultStack,
  waitForProjection,
  wireStatus,
  type FaultStack,
  type HealthRecord,
} from './harness';

describe('fault: read-model keys deleted under a running query service', function () {
  this.timeout(180_000);
  let f: FaultStack;
  let health: HealthRecord | undefined;
  let layout: KeyLayout;

  before(async () => {
    f = await startFaultStack();
    layout = createKeyLayout(f.stack.env.REDIS_KEY_PREFIX ?? 'crucible', 1);
  });

  after(async () => {
    health?.close();
    await f?.close();
  });

  it('a deleted checkpoint with dozens of evaluations in the log is repaired from the log: no duplicate history, the checker clean', async () => {
    const [{ command, query }] = f.clients as [Clients];
    const { stack, redis } = f;
    const [queryService] = f.replicas as [RunningService];
    await runBurst(command, 'lost-cp', 400, { concurrency: 8 });
    const evaluations = await readEvaluations(stack.databaseUrl);
    // The old repair took one evaluation per attempt and gave up after 20: far more than that.
    expect(evaluations.length).to.be.greaterThan(60);
    const before = await readEventLog(stack.databaseUrl);
    await waitForProjection(query, before[before.length - 1]?.position ?? 0n);

    health = recordHealth(queryService.address, QUERY_SERVICE);
    await health.whenStatus('SERVING', 0);
    const seen = health.statuses.length;
    expect(await redis.del(layout.checkpoint(0))).to.equal(1);
    // The next command's announcement wakes a catch-up, which finds the read models behind
    // what this replica applied: it stops serving, replays the log over the surviving keys,
    // and serves again.
    const next = await runStep(command, 'after-loss', 'submit');
    await health.whenStatus('NOT_SERVING', seen);
    await health.whenStatus('SERVING', health.statuses.indexOf('NOT_SERVING', seen) + 1, 30_000);
    await waitForProjection(query, BigInt(next.position));
    const { evaluation } = await call(query, query.getEvaluation, { evalId: 'after-loss' });
    expect(evaluation?.revision).to.equal('1');
    // The checker compares every history with revisions 1..n: a replayed entry appended twice fails it.
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
  });

  it('while records, histories and then everything are deleted under steady reads, every read answers the truth or UNAVAILABLE', async () => {
    const [{ query }] = f.clients as [Clients];
    const { stack, redis } = f;
    const stored = await readEvaluations(stack.databaseUrl);
    const truth = new Map(stored.map((e) => [e.evalId, e]));
    const ids = [...truth.keys()];
    const wrong: string[] = [];
    let answered = 0;
    let refused = 0;
    let stopped = false;
    let rounds = 0;
    let roundClean = true;
    const progress = new Recorder();

    const read = async (i: number): Promise<void> => {
      const evalId = ids[i % ids.length] ?? '';
      try {
        if (i % 10 === 9) {
          const page = await call(query, query.listEvaluations, { status: 0, pageSize: 1000, pageToken: '' }, 5_000);
          if (page.evaluations.length !== ids.length)
            wrong.push(`a list page held ${page.evaluations.length} of ${ids.length} evaluations`);
        } else {
          const { evaluation } = await call(query, query.getEvaluation, { evalId }, 5_000);
          const expected = truth.get(evalId);
          if (
            evaluation?.revision !== expected?.revision.toString() ||
            evaluation?.status !== wireStatus(expected?.status ?? '')
          )
            wrong.push(
              `${evalId}: revision ${evaluation?.revision} status ${evaluation?.status}, the log has ${expected?.revision} ${expected?.status}`,
            );
        }
        answered += 1;
      } catch (err) {
        const code = (err as ServiceError).code;
        if (code === grpcStatus.UNAVAILABLE) {
          refused += 1;
          roundClean = false;
        } else wrong.push(`${evalId}: ${(err as Error).message}`);
      }
      if (i % ids.length === ids.length - 1) {
        if (roundClean) rounds += 1;
        roundClean = true;
      }
      progress.notify();
    };
    // Two readers, each its own sequence of ids and lists.
    const readers = [0, 1].map(async (offset) => {
      for (let i = offset; !stopped; i += 2) await read(i);
    });
    try {
      const injectAfter = async (reads: number): Promise<void> => {
        const target = answered + refused + reads;
        await progress.waitFor(`${reads} more reads`, () => answered + refused >= target, 30_000);
      };
      await injectAfter(50);
      const partition = (evalId: string): number => layout.partitionOf(evalId);
      const victims = ids.filter((_, i) => i % 7 === 0);
      expect(await redis.del(...victims.map((id) => layout.record(partition(id), id)))).to.equal(victims.length);
      await injectAfter(200);
      const others = ids.filter((_, i) => i % 5 === 1);
      await redis.del(...others.flatMap((id) => [layout.history(partition(id), id), layout.record(partition(id), id)]));
      await injectAfter(200);
      await deleteKeys(redis, `${stack.env.REDIS_KEY_PREFIX ?? ''}:*`);
      // Repaired: two whole rounds of reads in a row answer without a refusal.
      const cleanBefore = rounds;
      await progress.waitFor('two clean rounds of reads', () => rounds >= cleanBefore + 2, 60_000);
    } finally {
      stopped = true;
      await Promise.all(readers);
    }
    expect(wrong, wrong.slice(0, 10).join('\n')).to.deep.equal([]);
    expect(refused, 'reads that met lost keys were refused').to.be.greaterThan(0);
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
  });
});
