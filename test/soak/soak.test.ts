import { changeChannel } from '../../shared/changes';
import { credentials, status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import type { EvaluationUpdate } from '../../shared/generated/crucible/storage/v1/evaluation';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { createKeyLayout, INDEXED_STATUSES } from '../../services/query/read-models/keys';
import { seededRandom } from '../support/random';
import { call, createClients, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import { deleteKeys } from '../support/redis-keys';
import { freePort, startPrivateStack, type PrivateStack } from '../support/private-servers';
import {
  cancelOpenStreams,
  describeUpdate,
  expectReadModelsEqualLog,
  expectSameAsLog,
  readEventLog,
  recordFirehose,
  runStep,
  startCommandService,
  startQueryService,
  waitForProjection,
  wireStatus,
  forgedChangeMessages,
  type FirehoseRecord,
  type LoggedEvent,
  type Step,
} from '../fault/harness';

/**
 * The randomized soak (`make soak`; `make test` runs 3 minutes of it with a fixed seed): a mixed
 * load of commands, lookups, lists and resuming firehose watchers against a command service and
 * two query replicas, while a scheduler injects, one after the other at random times, every
 * fault the services handle: kill -9 of a service, Redis restarted empty or flushed, random
 * read-model keys deleted, Redis at maxmemory, a replica paused, PostgreSQL stopped, forged
 * messages on the change channel. At the end:
 * every accepted command is visible, every watcher saw every change exactly once in order, the
 * checker is clean, and no read answered wrong (an answer is wrong when it is not the
 * evaluation's state at some position of the log at or past what its reader had written).
 *
 * SOAK_SECONDS (default 180) and SOAK_SEED (default fixed) choose the run; SOAK_FAULTS (names
 * separated by commas, e.g. `delete random read-model keys`) narrows the faults to reproduce one,
 * and SOAK_FAULT_GAP_MS (default 3000) the shortest pause between two of them (the longest is 3⅓×).
 */
const SECONDS = Number(process.env.SOAK_SECONDS ?? '180');
const SEED = Number(process.env.SOAK_SEED ?? '20261201');
const ONLY_FAULTS = process.env.SOAK_FAULTS?.split(',').map((name) => name.trim()) ?? [];
const FAULT_GAP_MS = Number(process.env.SOAK_FAULT_GAP_MS ?? '3000');

const SHAPES: readonly (readonly Step[])[] = [
  ['submit', 'start', 'metrics', 'complete'],
  ['submit', 'start', 'violation', 'fail'],
  ['submit', 'cancel'],
  ['submit', 'metrics', 'start', 'cancel'],
];

/** Codes a client retries (the same request_id makes the retry safe). */
const RETRYABLE = new Set([
  grpcStatus.UNAVAILABLE,
  grpcStatus.DEADLINE_EXCEEDED,
  grpcStatus.CANCELLED,
  grpcStatus.UNKNOWN,
  grpcStatus.RESOURCE_EXHAUSTED,
]);

interface Answer {
  readonly evalId: string;
  readonly revision: string;
  readonly status: number;
  readonly position: string;
  /** The revision the reader knew accepted when it asked. */
  readonly atLeast: bigint;
}

describe(`soak: ${SECONDS} s of mixed load under random faults (seed ${SEED})`, function () {
  this.timeout((SECONDS + 300) * 1000);
  let stack: PrivateStack;
  let commandEnv: Record<string, string>;
  const queryEnvs: Record<string, string>[] = [];
  let commandService: RunningService | undefined;
  const replicas: (RunningService | undefined)[] = [];
  const clients: Clients[] = [];
  let redis: Redis | undefined;

  before(async () => {
    stack = await startPrivateStack({ overrides: { CHANGE_LOG_RETENTION: '10000000', CATCH_UP_INTERVAL_MS: '500' } });
    // Fixed ports: a restarted service comes back where its clients look for it.
    commandEnv = { ...stack.env, COMMAND_PORT: String(await freePort()) };
    commandService = await startCommandService(commandEnv);
    for (let i = 0; i < 2; i += 1) {
      queryEnvs.push({ ...stack.env, QUERY_PORT: String(await freePort()) });
      const replica = await startQueryService(queryEnvs[i] ?? {});
      replicas.push(replica);
      clients.push(createClients(commandService.address, replica.address));
    }
    redis = new Redis(stack.env.REDIS_URL ?? '', { maxRetriesPerRequest: 1, lazyConnect: false });
    redis.on('error', () => undefined);
  });

  after(async () => {
    cancelOpenStreams();
    for (const c of clients) c.close();
    redis?.disconnect();
    for (const replica of replicas) await replica?.kill9();
    await commandService?.kill9();
    await stack?.close();
  });

  it('loses no accepted command, every watcher sees every change once in order, no read answers wrong', async () => {
    const rng = seededRandom(SEED);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(rng() * items.length)] as T;
    const [first, second] = clients;
    if (first === undefined || second === undefined || redis === undefined) throw new Error('set-up failed');
    const query = (i: number): EvaluationQueryServiceClient => (clients[i % clients.length] ?? first).query;
    const deadline = Date.now() + SECONDS * 1000;
    let loadStopped = false;
    const figures = { commands: 0, retries: 0, reads: 0, refused: 0, lists: 0, faults: new Map<string, number>() };
    const wrong: string[] = [];
    const answers: Answer[] = [];
    /** Per evaluation, the revision and position of its last accepted command. */
    const accepted = new Map<string, { revision: bigint; position: bigint }>();

    // Commands: each runner lives evaluations through, retrying a step with the same request_id
    // until it is accepted (a crashed service, a stopped PostgreSQL: the answer comes later).
    let evaluations = 0;
    const runner = async (): Promise<void> => {
      while (!loadStopped) {
        const evalId = `soak-${evaluations++}`;
        const shape = pick(SHAPES);
        for (const step of shape) {
          for (let attempt = 1; ; attempt += 1) {
            try {
              const result = await runStep(first.command, evalId, step, {
                requestId: `${evalId}-${step}`,
                deadlineMs: 5_000,
              });
              accepted.set(evalId, { revision: BigInt(result.revision), position: BigInt(result.position) });
              figures.commands += 1;
              break;
            } catch (err) {
              const code = (err as ServiceError).code;
              if (!RETRYABLE.has(code) || Date.now() > deadline + 120_000)
                throw new Error(`${evalId} ${step}: ${(err as Error).message}`, { cause: err });
              figures.retries += 1;
              await sleep(Math.min(1000, 50 * attempt));
            }
          }
        }
      }
    };

    // Lookups and lists: read-your-writes through min_position, on either replica.
    const reader = async (i: number): Promise<void> => {
      while (!loadStopped) {
        const ids = [...accepted.keys()];
        if (ids.length === 0) {
          await sleep(20);
          continue;
        }
        const evalId = pick(ids);
        const known = accepted.get(evalId);
        if (known === undefined) continue;
        try {
          if (rng() < 0.1) {
            const page = await call(
              query(i),
              query(i).listEvaluations,
              { status: 0, pageSize: 50, pageToken: '' },
              2_000,
            );
            figures.lists += 1;
            for (const e of page.evaluations)
              answers.push({
                evalId: e.evalId,
                revision: e.revision,
                status: e.status,
                position: e.position,
                atLeast: 0n,
              });
          } else {
            const { evaluation } = await call(
              query(i),
              query(i).getEvaluation,
              { evalId, minPosition: known.position.toString() },
              2_000,
            );
            if (evaluation === undefined) wrong.push(`${evalId}: an answer without an evaluation`);
            else
              answers.push({
                evalId,
                revision: evaluation.revision,
                status: evaluation.status,
                position: evaluation.position,
                atLeast: known.revision,
              });
          }
          figures.reads += 1;
        } catch (err) {
          const code = (err as ServiceError).code;
          if (code === grpcStatus.UNAVAILABLE || code === grpcStatus.DEADLINE_EXCEEDED) figures.refused += 1;
          else wrong.push(`${evalId}: ${(err as Error).message}`);
          await sleep(10);
        }
      }
    };

    // Watchers: firehoses from position 0 that resume from where they were whenever their stream
    // breaks (a replica killed, paused past its deadline, Redis gone).
    // Each on a channel of its own whose reconnect backoff stays short: grpc-js' default grows to
    // two minutes after a few refused connects (a replica killed and slow to come back), which
    // would measure the client's patience, not the service.
    const watcherClients = [0, 1, 2].map(
      (i) =>
        new EvaluationQueryServiceClient(
          `127.0.0.1:${queryEnvs[i % queryEnvs.length]?.QUERY_PORT ?? ''}`,
          credentials.createInsecure(),
          { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1_000 },
        ),
    );
    const watchers = [0, 1, 2].map((i) => {
      const client = watcherClients[i] ?? first.query;
      const updates: EvaluationUpdate[] = [];
      let record: FirehoseRecord = recordFirehose(client, { afterPosition: '0' });
      let stopped = false;
      const loop = (async () => {
        for (;;) {
          const outcome = await record.finished;
          updates.push(...record.updates);
          if (stopped) return;
          const code = outcome === 'ok' ? grpcStatus.OK : outcome.code;
          if (code === grpcStatus.OUT_OF_RANGE) throw new Error(`watcher ${i}: OUT_OF_RANGE at ${record.reached}`);
          await sleep(100);
          record = recordFirehose(client, { afterPosition: record.reached.toString() });
        }
      })();
      return {
        updates,
        get reached() {
          return record.reached;
        },
        async stop(): Promise<void> {
          stopped = true;
          record.cancel();
          await loop;
        },
      };
    });

    // Faults, one at a time, each undone before the next.
    const prefix = stack.env.REDIS_KEY_PREFIX ?? 'fault';
    const layout = createKeyLayout(prefix, 1);
    const restartReplica = async (i: number): Promise<void> => {
      await replicas[i]?.kill9();
      replicas[i] = await startQueryService(queryEnvs[i] ?? {}, 120_000);
    };
    const faults: Record<string, () => Promise<void>> = {
      'kill -9 the command service': async () => {
        await commandService?.kill9();
        commandService = await startCommandService(commandEnv, 60_000);
      },
      'kill -9 a query replica': () => restartReplica(Math.floor(rng() * 2)),
      'restart Redis empty': async () => {
        await stack.redis.stop();
        await sleep(500);
        await stack.redis.start();
      },
      // FLUSHDB, as an operator flushes Redis: at once. Deleting the prefix key by key raced the
      // replicas' steps (a step could write a new change-log stream after the old one went and
      // before the checkpoint did), leaving holes in the change log, which watchers are told of
      // with OUT_OF_RANGE: the change-log-holes spec covers that, not this one (seed 42, 300 s).
      'flush the read models': async () => {
        await redis?.flushdb();
      },
      'delete random read-model keys': async () => {
        // Records and histories, now and then the checkpoint, a whole status index or a few
        // members of the index of all evaluations. Not change-log entries, whose loss a resuming
        // watcher is told of (OUT_OF_RANGE, change-log-holes spec).
        const doomed = rng() < 0.2 ? [layout.checkpoint(0)] : [];
        if (rng() < 0.3) doomed.push(layout.indexStatus(0, 'default', INDEXED_STATUSES[Math.floor(rng() * 5)] ?? 1));
        const lost = (key: string): boolean => {
          const kind = layout.describe(key)?.kind;
          return (kind === 'record' || kind === 'history') && rng() < 0.05;
        };
        if (redis === undefined) return;
        await deleteKeys(redis, `${prefix}:*`, lost, doomed);
        if (rng() < 0.5) {
          const members = await redis.zrandmember(layout.indexAll(0, 'default'), 3);
          if (members.length > 0) await redis.zrem(layout.indexAll(0, 'default'), ...members);
        }
      },
      'fill Redis to maxmemory': async () => {
        await redis?.config('SET', 'maxmemory', '1');
        await sleep(2_000);
        await redis?.config('SET', 'maxmemory', '0');
      },
      'pause a query replica': async () => {
        const replica = replicas[Math.floor(rng() * 2)];
        if (replica?.pid === undefined) return;
        process.kill(replica.pid, 'SIGSTOP');
        await sleep(3_000);
        process.kill(replica.pid, 'SIGCONT');
      },
      'publish forged change messages': async () => {
        // Garbage, and well-formed events PostgreSQL does not have, one at the next position:
        // pub/sub carries hints only, so none may reach a read model (the checker says).
        for (const message of await forgedChangeMessages(stack.databaseUrl, 'soak-0'))
          await redis?.spublish(changeChannel(prefix, 0), message);
      },
      'stop PostgreSQL': async () => {
        await stack.postgres.stop();
        await sleep(2_000);
        await stack.postgres.start();
      },
    };
    const unknown = ONLY_FAULTS.filter((name) => !(name in faults));
    if (unknown.length > 0) throw new Error(`SOAK_FAULTS names no fault: ${unknown.join(', ')}`);
    const chosen = ONLY_FAULTS.length > 0 ? ONLY_FAULTS : Object.keys(faults);
    const scheduler = (async () => {
      while (Date.now() < deadline - 10_000) {
        await sleep(FAULT_GAP_MS * (1 + (rng() * 7) / 3));
        const name = pick(chosen);
        figures.faults.set(name, (figures.faults.get(name) ?? 0) + 1);
        process.stdout.write(
          `      [soak ${Math.round((SECONDS * 1000 - (deadline - Date.now())) / 1000)} s] ${name}\n`,
        );
        await faults[name]?.();
      }
    })();

    const runners = Array.from({ length: 4 }, () => runner());
    const readers = [0, 1].map((i) => reader(i));
    await scheduler;
    while (Date.now() < deadline) await sleep(200);
    loadStopped = true;
    await Promise.all([...runners, ...readers]);

    // Settle: the replicas catch up with the log, the watchers reach its head.
    const log = await readEventLog(stack.databaseUrl);
    const head = log[log.length - 1]?.position ?? 0n;
    await waitForProjection(first.query, head, 120_000);
    await waitForProjection(second.query, head, 120_000);
    for (const watcher of watchers) {
      const until = Date.now() + 60_000;
      while (watcher.reached < head && Date.now() < until) await sleep(100);
      await watcher.stop();
    }
    for (const client of watcherClients) client.close();

    process.stdout.write(
      `      [soak] seed ${SEED}: ${[...figures.faults].map(([n, c]) => `${n} ×${c}`).join(', ')}; ` +
        `${figures.commands} commands accepted (${figures.retries} retries), ${figures.reads} reads ` +
        `(${figures.lists} lists), ${figures.refused} refused, ${wrong.length} wrong; ${log.length} events\n`,
    );

    expect(wrong, wrong.slice(0, 10).join('\n')).to.deep.equal([]);
    expect(figures.faults.size, 'faults injected').to.be.greaterThan(0);
    // Every accepted command is in the log, and read back as the log has it.
    const logged = new Map<string, LoggedEvent[]>();
    for (const event of log) {
      const events = logged.get(event.evalId);
      if (events === undefined) logged.set(event.evalId, [event]);
      else events.push(event);
    }
    const missing = [...accepted]
      .filter(([evalId, known]) => BigInt(logged.get(evalId)?.length ?? 0) < known.revision)
      .map(([evalId, known]) => `${evalId}: accepted revision ${known.revision}, not in the log`);
    expect(missing, missing.slice(0, 10).join('\n')).to.deep.equal([]);
    // Every answer is the state at some position of the log, at or past what its reader wrote.
    const wrongAnswers: string[] = [];
    for (const answer of answers) {
      const events = logged.get(answer.evalId) ?? [];
      const event = events[Number(answer.revision) - 1];
      if (event === undefined || event.position.toString() !== answer.position)
        wrongAnswers.push(`${answer.evalId}@${answer.revision} at ${answer.position}: not in the log`);
      else if (BigInt(answer.revision) < answer.atLeast)
        wrongAnswers.push(`${answer.evalId}@${answer.revision}: older than the accepted ${answer.atLeast}`);
      else if (statusAfter(events, Number(answer.revision)) !== answer.status)
        wrongAnswers.push(`${answer.evalId}@${answer.revision}: status ${answer.status}`);
    }
    expect(wrongAnswers, wrongAnswers.slice(0, 10).join('\n')).to.deep.equal([]);
    for (const [i, watcher] of watchers.entries()) {
      try {
        expectSameAsLog(watcher.updates, log, 0n, `watcher ${i}`);
      } catch (err) {
        throw new Error(
          `${(err as Error).message}\nlast updates: ${watcher.updates.slice(-3).map(describeUpdate).join(', ')}`,
          { cause: err },
        );
      }
    }
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
  });
});

/** The status each lifecycle event leaves; the others (metrics, security events) keep the one before. */
const STATUS_AFTER: Readonly<Record<string, string>> = {
  EvaluationQueued: 'queued',
  EvaluationStarted: 'running',
  EvaluationCompleted: 'completed',
  EvaluationFailed: 'failed',
  EvaluationCancelled: 'cancelled',
};

/** The wire status an evaluation has after its `revision` first events. */
function statusAfter(events: readonly LoggedEvent[], revision: number): number {
  let stored = 'queued';
  for (const event of events.slice(0, revision)) stored = STATUS_AFTER[event.eventType] ?? stored;
  return wireStatus(stored);
}
