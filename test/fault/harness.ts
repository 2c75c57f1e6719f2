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
import { Client } from 'pg';
import { encodeChange } from '../../shared/changes';
import { EVENT_TYPE_TO_PROTO, parseStatus, statusToProto } from '../../shared/domain';
import {
  FailureReason,
  Severity,
  ViolationType,
  type EvaluationStatus,
  type EventType,
  type EvaluationUpdate,
} from '../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import type {
  EvaluationQueryServiceClient,
  WatchEvaluationResponse,
  WatchEvaluationsRequest,
  WatchEvaluationsResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { call, createClients, type Clients } from '../support/clients';
import { startService, waitForServing, type RunningService } from '../support/processes';
import { freePort, startPrivateStack, type PrivateStack } from '../support/private-servers';

/**
 * What the fault specs share: services as processes, bursts of commands, watchers that record
 * everything they receive, and the event log in PostgreSQL as the reference to compare with.
 */

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

/** `metrics` and `violation` record without moving the status (RecordMetrics, RecordSecurityEvent). */
export type Step = 'submit' | 'start' | 'complete' | 'fail' | 'cancel' | 'metrics' | 'violation';

/** One evaluation's life as a list of commands, run in order. */
export interface Plan {
  readonly evalId: string;
  readonly steps: readonly Step[];
}

const SHAPES: readonly (readonly Step[])[] = [
  ['submit', 'start', 'metrics', 'complete'],
  ['submit', 'start', 'violation', 'fail'],
  ['submit', 'cancel'],
  ['submit', 'metrics', 'start', 'cancel'],
];

/** Languages and executors the plans spread over, so that the facet indexes and queue counts move too. */
const LANGUAGES = ['python', 'go', 'rust'];
const spread = <T>(evalId: string, values: readonly T[]): T => {
  let hash = 0;
  for (const c of evalId) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return values[hash % values.length] as T;
};

/** Plans for evaluations `<prefix>-0`, `<prefix>-1` …, cycling through four life shapes, with at least `commands` commands in all. */
export function plansFor(prefix: string, commands: number): Plan[] {
  const plans: Plan[] = [];
  for (let total = 0, i = 0; total < commands; i += 1) {
    const shape = SHAPES[i % SHAPES.length] ?? SHAPES[0] ?? [];
    const steps = shape.slice(0, Math.min(shape.length, commands - total));
    plans.push({ evalId: `${prefix}-${i}`, steps });
    total += steps.length;
  }
  return plans;
}

export interface CommandResult {
  readonly evalId: string;
  readonly revision: string;
  readonly position: string;
}

export interface StepOptions {
  readonly requestId?: string;
  readonly metadata?: Record<string, unknown>;
  readonly deadlineMs?: number;
}

/** Runs one command of an evaluation's life through the command service. */
export function runStep(
  command: EvaluationCommandServiceClient,
  evalId: string,
  step: Step,
  options: StepOptions = {},
): Promise<CommandResult> {
  const requestId = options.requestId ?? '';
  const deadline = options.deadlineMs ?? 15_000;
  switch (step) {
    case 'submit':
      return call(
        command,
        command.submitEvaluation,
        {
          evalId,
          code: `print(${JSON.stringify(evalId)})`,
          language: spread(evalId, LANGUAGES),
          engine: 'docker',
          timeoutSeconds: 60,
          metadata: options.metadata ?? { suite: 'fault' },
          requestId,
        },
        deadline,
      );
    case 'start':
      return call(
        command,
        command.startEvaluation,
        { evalId, executorId: spread(evalId, ['executor-1', 'executor-2']), containerId: `c-${evalId}`, requestId },
        deadline,
      );
    case 'complete':
      return call(
        command,
        command.completeEvaluation,
        { evalId, output: Buffer.from(`${evalId} done\n`), exitCode: 0, requestId },
        deadline,
      );
    case 'fail':
      return call(
        command,
        command.failEvaluation,
        { evalId, error: `${evalId} broke`, exitCode: 3, reason: FailureReason.FAILURE_REASON_ERROR, requestId },
        deadline,
      );
    case 'cancel':
      return call(command, command.cancelEvaluation, { evalId, reason: 'fault test', requestId }, deadline);
    case 'metrics':
      return call(
        command,
        command.recordMetrics,
        {
          evalId,
          metrics: [
            { name: 'loss', value: 0.5, unit: '', step: '1' },
            { name: 'loss', value: 0.25, unit: '', step: '2' },
            { name: 'eval/accuracy', value: 0.75, unit: '%' },
          ],
          requestId,
        },
        deadline,
      );
    case 'violation':
      return call(
        command,
        command.recordSecurityEvent,
        {
          resourceViolation: {
            evalId,
            containerId: `c-${evalId}`,
            violationType: ViolationType.VIOLATION_TYPE_MEMORY,
            details: { observedBytes: 1024 },
            actionTaken: 'logged',
            severity: Severity.SEVERITY_LOW,
          },
          requestId,
        },
        deadline,
      );
    default: {
      const unreachable: never = step;
      throw new Error(`unknown step ${String(unreachable)}`);
    }
  }
}

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
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let plan = plans[next++]; plan !== undefined; plan = plans[next++]) {
      for (const step of plan.steps) {
        try {
          await runStep(
            command,
            plan.evalId,
            step,
            options.metadata !== undefined ? { metadata: options.metadata } : {},
          );
          succeeded += 1;
          settle();
        } catch (err) {
          failures.push({ evalId: plan.evalId, step, error: err as ServiceError });
          break;
        }
      }
    }
  };
  const concurrency = options.concurrency ?? 8;
  const done = Promise.all(Array.from({ length: concurrency }, () => worker())).then(() => {
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

export interface LoggedEvent {
  readonly position: bigint;
  readonly evalId: string;
  readonly revision: bigint;
  readonly eventType: string;
}

export async function withDatabase<T>(databaseUrl: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: databaseUrl, application_name: 'crucible-fault-test' });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export function readEventLog(databaseUrl: string): Promise<LoggedEvent[]> {
  return withDatabase(databaseUrl, async (client) => {
    const { rows } = await client.query<{ position: string; eval_id: string; revision: string; event_type: string }>(
      `SELECT e.position::text AS position, e.eval_id, e.revision::text AS revision, e.event_type FROM evaluation_events e ORDER BY e.position`,
    );
    return rows.map((r) => ({
      position: BigInt(r.position),
      evalId: r.eval_id,
      revision: BigInt(r.revision),
      eventType: r.event_type,
    }));
  });
}

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

/** The wire's EventType as the log spells it (EVENT_TYPE_EVALUATION_QUEUED → EvaluationQueued). */
export function logEventType(eventType: EventType): string {
  return (
    Object.entries(EVENT_TYPE_TO_PROTO).find(([, wire]) => wire === eventType)?.[0] ?? `unknown event type ${eventType}`
  );
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
// Watchers that record everything.

interface Waiter {
  readonly ready: () => boolean;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/**
 * Streams still open. A grpc-js client's close() lets ongoing calls finish, so a stream left
 * open by a failed test would keep mocha's process alive for good: after hooks cancel them all.
 */
const openStreams = new Set<{ cancel(): void }>();

function track(stream: ClientReadableStream<unknown>): void {
  openStreams.add(stream);
  const forget = (): void => void openStreams.delete(stream);
  stream.once('error', forget);
  stream.once('end', forget);
  stream.once('close', forget);
}

/** Cancels every stream a recorder opened and that is still open (for after hooks). */
export function cancelOpenStreams(): void {
  for (const stream of [...openStreams]) stream.cancel();
  openStreams.clear();
}

/** Waiters on a condition over what a recorder saw, woken by `notify` (no polling). */
export class Recorder {
  private readonly waiters: Waiter[] = [];
  ended: ServiceError | 'ok' | undefined;

  notify(): void {
    for (const waiter of [...this.waiters]) {
      if (waiter.ready()) {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  }

  end(result: ServiceError | 'ok'): void {
    this.ended = result;
    this.notify();
    for (const waiter of this.waiters.splice(0)) {
      waiter.reject(
        new Error(`the stream ended (${result === 'ok' ? 'OK' : `${status[result.code]}: ${result.details}`}) first`),
      );
    }
  }

  waitFor(what: string, ready: () => boolean, timeoutMs: number): Promise<void> {
    if (ready()) return Promise.resolve();
    if (this.ended !== undefined) return Promise.reject(new Error(`the stream ended before ${what}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`));
      }, timeoutMs);
      const waiter: Waiter = {
        ready,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.waiters.push(waiter);
    });
  }
}

export interface StreamRecord {
  /** Updates in the order received. */
  readonly updates: EvaluationUpdate[];
  /** How the stream ended: undefined while open, 'ok' for a clean end, or the error. */
  readonly ended: ServiceError | 'ok' | undefined;
  /** Resolves when the stream ended (never rejects). */
  readonly finished: Promise<ServiceError | 'ok'>;
  readonly call: ClientReadableStream<unknown>;
  cancel(): void;
}

export interface FirehoseRecord extends StreamRecord {
  readonly request: Partial<WatchEvaluationsRequest>;
  /** The highest position an update, progress or caught-up message carried (resume point). */
  readonly reached: bigint;
  readonly caughtUpAt: bigint | undefined;
  whenReached(position: bigint, timeoutMs?: number): Promise<void>;
  whenCaughtUp(timeoutMs?: number): Promise<void>;
}

export function recordFirehose(
  query: EvaluationQueryServiceClient,
  request: Partial<WatchEvaluationsRequest>,
): FirehoseRecord {
  const stream = query.watchEvaluations({ statuses: [], evalIds: [], ...request });
  track(stream);
  const recorder = new Recorder();
  const updates: EvaluationUpdate[] = [];
  let reached = BigInt(request.afterPosition ?? '0');
  let caughtUpAt: bigint | undefined;
  const see = (position: string | undefined): void => {
    if (position !== undefined && BigInt(position) > reached) reached = BigInt(position);
  };
  stream.on('data', (message: WatchEvaluationsResponse) => {
    if (message.update !== undefined) {
      updates.push(message.update);
      see(message.update.position);
    } else if (message.progress !== undefined) {
      see(message.progress.position);
    } else if (message.caughtUp !== undefined) {
      caughtUpAt ??= BigInt(message.caughtUp.position);
      see(message.caughtUp.position);
    }
    recorder.notify();
  });
  const finished = new Promise<ServiceError | 'ok'>((resolve) => {
    stream.on('error', (err: ServiceError) => {
      recorder.end(err);
      resolve(err);
    });
    stream.on('end', () => {
      // 'end' can precede the status; an error (if any) arrives as 'error' instead.
      setImmediate(() => {
        if (recorder.ended === undefined) {
          recorder.end('ok');
          resolve('ok');
        }
      });
    });
  });
  return {
    request,
    updates,
    get ended() {
      return recorder.ended;
    },
    finished,
    call: stream,
    cancel: () => stream.cancel(),
    get reached() {
      return reached;
    },
    get caughtUpAt() {
      return caughtUpAt;
    },
    whenReached: (position, timeoutMs = 30_000) =>
      recorder.waitFor(`position ${position} (reached ${reached})`, () => reached >= position, timeoutMs),
    whenCaughtUp: (timeoutMs = 30_000) =>
      recorder.waitFor('the caught-up marker', () => caughtUpAt !== undefined, timeoutMs),
  };
}

export interface EvaluationWatchRecord extends StreamRecord {
  /** The highest revision received. */
  readonly lastRevision: bigint;
  whenRevision(revision: bigint, timeoutMs?: number): Promise<void>;
}

export function recordEvaluationWatch(
  query: EvaluationQueryServiceClient,
  evalId: string,
  afterRevision?: bigint,
): EvaluationWatchRecord {
  const stream = query.watchEvaluation({
    evalId,
    ...(afterRevision !== undefined ? { afterRevision: afterRevision.toString() } : {}),
  });
  track(stream);
  const recorder = new Recorder();
  const updates: EvaluationUpdate[] = [];
  let lastRevision = afterRevision ?? 0n;
  stream.on('data', (message: WatchEvaluationResponse) => {
    if (message.update !== undefined) {
      updates.push(message.update);
      if (BigInt(message.update.revision) > lastRevision) lastRevision = BigInt(message.update.revision);
    }
    recorder.notify();
  });
  const finished = new Promise<ServiceError | 'ok'>((resolve) => {
    stream.on('error', (err: ServiceError) => {
      recorder.end(err);
      resolve(err);
    });
    stream.on('end', () => {
      setImmediate(() => {
        if (recorder.ended === undefined) {
          recorder.end('ok');
          resolve('ok');
        }
      });
    });
  });
  return {
    updates,
    get ended() {
      return recorder.ended;
    },
    finished,
    call: stream,
    cancel: () => stream.cancel(),
    get lastRevision() {
      return lastRevision;
    },
    whenRevision: (revision, timeoutMs = 30_000) =>
      recorder.waitFor(
        `revision ${revision} of ${evalId} (last ${lastRevision})`,
        () => lastRevision >= revision,
        timeoutMs,
      ),
  };
}

/** Statuses a firehose client resumes on (from its last position). */
const RESUMABLE = ['UNAVAILABLE', 'RESOURCE_EXHAUSTED'];

/**
 * Everything a firehose client gets up to `head`, as a client that resumes would: when the
 * stream ends with a resumable status it opens a new one after the last position it reached
 * (at most `maxResumes` times). Fails on any other end. Returns the updates and how many
 * times it resumed.
 */
export async function readFirehoseThrough(
  query: EvaluationQueryServiceClient,
  first: FirehoseRecord,
  head: bigint,
  maxResumes = 5,
  timeoutMs = 60_000,
): Promise<{ updates: EvaluationUpdate[]; resumes: number }> {
  const updates: EvaluationUpdate[] = [];
  let record = first;
  for (let resumes = 0; ; resumes += 1) {
    const outcome = await Promise.race([
      record.whenReached(head, timeoutMs).then(() => 'reached' as const),
      record.finished,
    ]);
    updates.push(...record.updates);
    if (outcome === 'reached') {
      record.cancel();
      return { updates, resumes };
    }
    const code = outcome === 'ok' ? 'OK' : (status[outcome.code] ?? String(outcome.code));
    expect(code, `the firehose ended before position ${head} (reached ${record.reached})`).to.be.oneOf(RESUMABLE);
    expect(resumes, 'resumes').to.be.lessThan(maxResumes);
    record = recordFirehose(query, { ...first.request, afterPosition: record.reached.toString() });
  }
}

/** Short form of updates for assertion messages and comparisons: "position evalId@revision EventType". */
export function describeUpdate(u: EvaluationUpdate): string {
  return `${u.position} ${u.evaluation?.evalId ?? '?'}@${u.revision} ${logEventType(u.eventType)}`;
}

export function describeLogged(e: LoggedEvent): string {
  return `${e.position} ${e.evalId}@${e.revision} ${e.eventType}`;
}

/**
 * The updates a firehose delivered equal the log after `after`, one for one: same positions
 * (so no gap and no duplicate), same evaluation and revision at each.
 */
export function expectSameAsLog(
  updates: readonly EvaluationUpdate[],
  log: readonly LoggedEvent[],
  after = 0n,
  what = 'firehose',
): void {
  const expected = log.filter((e) => e.position > after).map(describeLogged);
  const actual = updates.map(describeUpdate);
  if (actual.length !== expected.length || actual.some((a, i) => a !== expected[i])) {
    const firstDiff = actual.findIndex((a, i) => a !== expected[i]);
    const at = firstDiff === -1 ? Math.min(actual.length, expected.length) : firstDiff;
    throw new Error(
      `${what}: ${actual.length} updates vs ${expected.length} events in the log; first difference at index ${at}: ` +
        `got ${actual.slice(Math.max(0, at - 2), at + 3).join(', ') || '(none)'}, ` +
        `expected ${expected.slice(Math.max(0, at - 2), at + 3).join(', ') || '(none)'}`,
    );
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
