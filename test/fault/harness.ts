import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  credentials,
  loadPackageDefinition,
  status,
  type Client as GrpcClient,
  type ClientReadableStream,
  type ServiceClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { encodeChange } from '../../shared/changes';
import { parseStatus, statusToProto } from '../../shared/domain';
import type { EvaluationStatus } from '../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import type { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { runPlans } from '../support/bursts';
import { call, createClients, type Clients } from '../support/clients';
import { plansFor, runStep, type Plan, type Step } from '../support/commands';
import { readEventLog, withDatabase } from '../support/event-log';
import { startService, waitForServing, type RunningService } from '../support/processes';
import { freePort, startPrivateStack, type PrivateStack } from '../support/private-servers';
import { cancelOpenStreams, Recorder, track } from '../support/watchers';

/**
 * What the fault specs share: services as processes, bursts of commands, watchers that record
 * everything they receive, and the event log in PostgreSQL as the reference to compare with.
 */

// The commands, the event log and the watchers live in test/support, shared with the cluster
// and e2e specs; they are exported here too, so that a fault spec finds all it needs in one place.
export { plansFor, runStep, type CommandResult, type Plan, type Step, type StepOptions } from '../support/commands';
export {
  describeLogged,
  describeUpdate,
  expectSameAsLog,
  logEventType,
  readEventLog,
  withDatabase,
  type LoggedEvent,
} from '../support/event-log';
export {
  cancelOpenStreams,
  readFirehoseThrough,
  recordEvaluationWatch,
  recordFirehose,
  Recorder,
  type EvaluationWatchRecord,
  type FirehoseRecord,
  type StreamRecord,
} from '../support/watchers';

export const COMMAND_SERVICE = 'crucible.storage.v1.EvaluationCommandService';
export const QUERY_SERVICE = 'crucible.storage.v1.EvaluationQueryService';
const PROJECT_ROOT = join(__dirname, '..', '..', '..');

/** Starts a service and waits until it is SERVING; a service that never is gets killed (and its log shown). */
async function startServing(
  kind: 'command' | 'query',
  name: string,
  env: Record<string, string>,
  timeoutMs: number,
): Promise<RunningService> {
  const service = await startService(kind, env, { startTimeoutMs: timeoutMs });
  try {
    await waitForServing(service.address, name, timeoutMs);
  } catch (err) {
    await service.kill9();
    throw new Error(`${(err as Error).message}; its output:\n${service.logs().slice(-4000)}`, { cause: err });
  }
  return service;
}

/**
 * What most fault specs run on: a private PostgreSQL and Redis, a command service and query
 * replicas as processes (on fixed ports, so that one restarted comes back where its clients
 * look), a client pair per replica, and an admin Redis client. `close` stops it all, in order.
 */
export interface FaultStack {
  readonly stack: PrivateStack;
  /** Clients of the command service and of replica i. */
  readonly clients: readonly Clients[];
  readonly redis: Redis;
  readonly command: RunningService;
  readonly replicas: readonly RunningService[];
  /**
   * Stops the command service (SIGTERM, or kill -9), runs `meanwhile` (a database restored under
   * it, say), and starts it again on its port.
   */
  restartCommand(options?: { how?: 'stop' | 'kill9'; meanwhile?: () => Promise<void> }): Promise<void>;
  close(): Promise<void>;
}

export async function startFaultStack(
  options: { replicas?: number; overrides?: Record<string, string> } = {},
): Promise<FaultStack> {
  const stack = await startPrivateStack(options.overrides !== undefined ? { overrides: options.overrides } : {});
  const commandEnv = { ...stack.env, COMMAND_PORT: String(await freePort()) };
  let command = await startCommandService(commandEnv);
  const replicas: RunningService[] = [];
  for (let i = 0; i < (options.replicas ?? 1); i += 1) replicas.push(await startQueryService(stack.env));
  const clients = replicas.map((replica) => createClients(command.address, replica.address));
  const redis = new Redis(stack.env.REDIS_URL ?? '', { maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  return {
    stack,
    clients,
    redis,
    get command() {
      return command;
    },
    replicas,
    async restartCommand({ how = 'stop', meanwhile } = {}) {
      if (how === 'kill9') await command.kill9();
      else await command.stop();
      await meanwhile?.();
      command = await startCommandService(commandEnv);
    },
    async close() {
      cancelOpenStreams();
      for (const c of clients) c.close();
      redis.disconnect();
      for (const replica of replicas) await replica.stop();
      await command.stop();
      await stack.close();
    },
  };
}

export function startCommandService(env: Record<string, string>, timeoutMs = 20_000): Promise<RunningService> {
  return startServing('command', COMMAND_SERVICE, env, timeoutMs);
}

/** Starts a query replica and waits until it is SERVING (caught up with the log). */
export function startQueryService(env: Record<string, string>, timeoutMs = 30_000): Promise<RunningService> {
  return startServing('query', QUERY_SERVICE, env, timeoutMs);
}

// ---------------------------------------------------------------------------------------------
// Commands

export interface CommandFailure {
  readonly evalId: string;
  readonly step: Step;
  readonly error: ServiceError;
}

export interface Burst {
  /** Commands that succeeded so far. */
  readonly succeeded: number;
  readonly failures: readonly CommandFailure[];
  /** Resolves once at least `count` commands succeeded (rejects if the burst ends first). */
  whenSucceeded(count: number): Promise<void>;
  /** Resolves when every plan ran (a failed command ends its plan). */
  readonly done: Promise<void>;
}

export interface BurstOptions {
  /** Plans run at the same time (default 8). */
  readonly concurrency?: number;
  readonly metadata?: Record<string, unknown>;
}

/**
 * Runs the plans with modest concurrency: each worker takes the next plan and runs its steps
 * in order. A failed command is recorded and ends its plan (its later steps would be illegal).
 */
export function startBurst(
  command: EvaluationCommandServiceClient,
  plans: readonly Plan[],
  options: BurstOptions = {},
): Burst {
  let succeeded = 0;
  const failures: CommandFailure[] = [];
  const waiters: { count: number; resolve: () => void; reject: (err: Error) => void }[] = [];
  const settle = (): void => {
    for (const waiter of [...waiters]) {
      if (succeeded >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };
  const runOne = async (plan: Plan, step: Step): Promise<boolean> => {
    try {
      await runStep(command, plan.evalId, step, options.metadata !== undefined ? { metadata: options.metadata } : {});
      succeeded += 1;
      settle();
      return true;
    } catch (err) {
      failures.push({ evalId: plan.evalId, step, error: err as ServiceError });
      return false;
    }
  };
  const done = runPlans(plans, options.concurrency ?? 8, runOne).then(() => {
    for (const waiter of waiters.splice(0)) {
      waiter.reject(new Error(`the burst ended after ${succeeded} successful commands, before ${waiter.count}`));
    }
  });
  return {
    get succeeded() {
      return succeeded;
    },
    failures,
    whenSucceeded(count) {
      if (succeeded >= count) return Promise.resolve();
      return new Promise((resolve, reject) => waiters.push({ count, resolve, reject }));
    },
    done,
  };
}

/** Runs plans of `commands` commands for `<prefix>-<i>` to the end, and fails unless every command succeeded. */
export async function runBurst(
  command: EvaluationCommandServiceClient,
  prefix: string,
  commands: number,
  options: BurstOptions = {},
): Promise<void> {
  const burst = startBurst(command, plansFor(prefix, commands), { concurrency: 4, ...options });
  await burst.done;
  expect(burst.failures, describeFailures(burst.failures)).to.deep.equal([]);
}

/**
 * Messages nobody may believe on the change channel: garbage, a non-numeric position, and events
 * PostgreSQL does not have, encoded as the command side encodes its own — a new evaluation
 * `forged-<position>` at the next position (the one the next real event takes) and another far
 * beyond it, and a cancel of `victim` at the next position.
 */
export async function forgedChangeMessages(databaseUrl: string, victim: string): Promise<string[]> {
  const head = await withDatabase(databaseUrl, (client) =>
    client.query<{ p: string }>('SELECT position::text AS p FROM event_log_head WHERE id = 1'),
  );
  const next = BigInt(head.rows[0]?.p ?? '0') + 1n;
  const recordedAt = new Date().toISOString();
  const queued = (position: bigint): string =>
    encodeChange({
      position: position.toString(),
      evalId: `forged-${position}`,
      revision: '1',
      recordedAt,
      event: {
        type: 'EvaluationQueued',
        data: {
          codeHash: '0'.repeat(64),
          codeSize: 1,
          language: 'python',
          engine: 'docker',
          timeoutSeconds: 5,
          metadata: { forged: true },
          createdAt: recordedAt,
        },
      },
    });
  const cancel = encodeChange({
    position: next.toString(),
    evalId: victim,
    revision: '9',
    recordedAt,
    event: { type: 'EvaluationCancelled', data: { reason: 'forged', cancelledAt: recordedAt } },
  });
  return ['garbage', '{"position":"x"}', queued(next), queued(next + 1_000_000n), cancel];
}

export function describeFailures(failures: readonly CommandFailure[]): string {
  return failures
    .slice(0, 10)
    .map((f) => `${f.step} ${f.evalId}: ${status[f.error.code] ?? f.error.code} ${f.error.details}`)
    .join('\n');
}

// ---------------------------------------------------------------------------------------------
// The event log in PostgreSQL: the reference every read model and watcher is compared with.

export interface StoredEvaluation {
  readonly evalId: string;
  readonly status: string;
  readonly revision: bigint;
}

export function readEvaluations(databaseUrl: string): Promise<StoredEvaluation[]> {
  return withDatabase(databaseUrl, async (client) => {
    const { rows } = await client.query<{ eval_id: string; status: string; revision: string }>(
      `SELECT e.eval_id, e.status, e.revision::text AS revision FROM evaluations e ORDER BY e.eval_id`,
    );
    return rows.map((r) => ({ evalId: r.eval_id, status: r.status, revision: BigInt(r.revision) }));
  });
}

/** The wire's status of a status as PostgreSQL stores it ("completed"). */
export function wireStatus(stored: string): EvaluationStatus {
  const status = parseStatus(stored);
  if (status === undefined) throw new Error(`unknown stored status ${stored}`);
  return statusToProto(status);
}

// ---------------------------------------------------------------------------------------------
// The consistency checker, as an operator runs it.

export interface CheckerResult {
  readonly code: number;
  readonly output: string;
  /** Every partition checkpoint the checker compared at. */
  readonly checkpoints: bigint[];
  readonly evaluations: number;
}

export function runConsistencyChecker(env: Record<string, string>): Promise<CheckerResult> {
  const script = join(PROJECT_ROOT, 'dist', 'services', 'query', 'cli', 'check-consistency.js');
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [script],
      { cwd: PROJECT_ROOT, env: { ...process.env, ...env }, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        if (code === -1) {
          reject(new Error(`consistency checker did not run: ${err?.message ?? ''}\n${stderr}`));
          return;
        }
        const summary = /checked (\d+) evaluations at checkpoints ([\d, ]+):/.exec(stdout);
        resolve({
          code,
          output: `${stdout}${stderr}`,
          checkpoints: (summary?.[2] ?? '')
            .split(',')
            .filter((s) => s.trim() !== '')
            .map((s) => BigInt(s.trim())),
          evaluations: Number(summary?.[1] ?? -1),
        });
      },
    );
  });
}

/**
 * The checker reports no difference, at a checkpoint equal to the log's head (a checker that
 * compares at a stale checkpoint would find nothing wrong with read models that lag), over
 * every evaluation PostgreSQL has.
 */
export async function expectReadModelsEqualLog(env: Record<string, string>, databaseUrl: string): Promise<void> {
  const log = await readEventLog(databaseUrl);
  const evaluations = await readEvaluations(databaseUrl);
  const head = log[log.length - 1]?.position ?? 0n;
  const result = await runConsistencyChecker(env);
  expect(result.code, `consistency checker found differences:\n${result.output}`).to.equal(0);
  expect(result.output).to.contain('no differences');
  expect(result.evaluations, result.output).to.equal(evaluations.length);
  expect(result.checkpoints.length, result.output).to.be.greaterThan(0);
  for (const checkpoint of result.checkpoints) expect(checkpoint, result.output).to.equal(head);
}

// ---------------------------------------------------------------------------------------------
// Waiting for the projection (no event exists for "caught up with position N" across
// processes, so this polls GetProjectionStatus with a small interval and a deadline).

export async function waitForProjection(
  query: EvaluationQueryServiceClient,
  position: bigint,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: string;
  for (;;) {
    try {
      const answer = await call(query, query.getProjectionStatus, {}, 2_000);
      last = `checkpoint ${answer.checkpoint}, head ${answer.headPosition}, caught up ${String(answer.caughtUp)}`;
      if (answer.caughtUp && BigInt(answer.checkpoint) >= position) return;
    } catch (err) {
      last = `GetProjectionStatus failed: ${(err as Error).message}`;
    }
    if (Date.now() > deadline)
      throw new Error(`projection did not reach position ${position} within ${timeoutMs / 1000}s (${last})`);
    await sleep(50);
  }
}

/** Polls `check` every `intervalMs` until it answers true; fails after `timeoutMs` saying `what`. */
export async function pollUntil(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 15_000,
  intervalMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Health.

interface HealthClient extends GrpcClient {
  Watch(request: { service: string }): ClientReadableStream<{ status: string }>;
}

export interface HealthRecord {
  /** Every status the server pushed, in order. */
  readonly statuses: string[];
  whenStatus(wanted: string, afterIndex: number, timeoutMs?: number): Promise<void>;
  close(): void;
}

/** Follows grpc.health.v1.Health/Watch of `service` and records every status pushed. */
export function recordHealth(address: string, service: string): HealthRecord {
  const definition = loadSync(healthProtoPath, { keepCase: true, enums: String, longs: String, defaults: true });
  const grpcObject = loadPackageDefinition(definition) as unknown as {
    grpc: { health: { v1: { Health: ServiceClientConstructor } } };
  };
  const client = new grpcObject.grpc.health.v1.Health(address, credentials.createInsecure()) as unknown as HealthClient;
  const stream = client.Watch({ service });
  track(stream);
  const recorder = new Recorder();
  const statuses: string[] = [];
  stream.on('data', (message: { status: string }) => {
    statuses.push(message.status);
    recorder.notify();
  });
  stream.on('error', (err: ServiceError) => recorder.end(err));
  return {
    statuses,
    whenStatus: (wanted, afterIndex, timeoutMs = 30_000) =>
      recorder.waitFor(
        `health ${wanted} after status #${afterIndex} (seen ${statuses.join(', ')})`,
        () => statuses.slice(afterIndex).includes(wanted),
        timeoutMs,
      ),
    close() {
      stream.cancel();
      client.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Process memory.

/** Resident set size of a process in bytes (Linux: VmRSS in /proc/<pid>/status). */
export function residentBytes(pid: number): number {
  const statusText = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = /VmRSS:\s+(\d+)\s+kB/.exec(statusText)?.[1];
  if (kib === undefined) throw new Error(`no VmRSS for process ${pid}`);
  return Number(kib) * 1024;
}

export const MiB = 1024 * 1024;
