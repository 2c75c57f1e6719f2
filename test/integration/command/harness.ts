import { createRedisClient, redisTargetOf, type RedisClient } from '../../../shared/redis';
import { Client, type Pool } from 'pg';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Limits } from '../../../shared/config';
import {
  CancelEvaluationRequest,
  CompleteEvaluationRequest,
  FailEvaluationRequest,
  RecordMetricsRequest,
  RecordSecurityEventRequest,
  StartEvaluationRequest,
  SubmitEvaluationRequest,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import {
  ContainerCreated,
  type ContainerLimits,
  type ResourceViolation,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import { DEFAULT_TENANT } from '../../../shared/domain';
import { silentLogger } from '../../../shared/logging';
import { createPool, type EvaluationEventRow } from '../../../shared/postgres';
import { createS3Client } from '../../../shared/s3';
import { createCommandExecutor, type CommandExecutor } from '../../../services/command/application/command-executor';
import { createRecentStates } from '../../../services/command/application/recent-states';
import type {
  AppendRequest,
  BlobStore,
  EvaluationStore,
  EventPublisher,
} from '../../../services/command/application/ports';
import {
  validateCancel,
  validateComplete,
  validateFail,
  validateRecordMetrics,
  validateRecordSecurityEvent,
  validateStart,
  validateSubmit,
  type CommandResult,
} from '../../../services/command/domain';
import { createPostgresEvaluationStore } from '../../../services/command/postgres/evaluation-store';
import { createRedisChangePublisher } from '../../../services/command/redis/change-publisher';
import { createS3BlobStore, type BlobStore as SharedBlobStore } from '../../../shared/blobs';
import { createFallbackStore } from '../../../services/command/blobs/fallback-store';
import { createTestEnvironment, type TestEnvironment } from '../../support/environment';

/** Application name of the executor's connections, to find them in pg_stat_activity. */
export const EXECUTOR_APPLICATION = 'crucible-command-it';

/** 2025-01-01T00:00:00Z; the clock steps one second per reading. */
const CLOCK_START = Date.UTC(2025, 0, 1);

export interface SteppingClock {
  now(): Date;
  /** How many times the clock was read. */
  readonly readings: number;
}

export function steppingClock(): SteppingClock {
  let readings = 0;
  return {
    now: () => new Date(CLOCK_START + 1000 * readings++),
    get readings() {
      return readings;
    },
  };
}

/** A RecordSecurityEventRequest with the fields a test cares about. */
export interface SecurityReportRequest {
  readonly containerCreated?: Partial<Omit<ContainerCreated, 'limits'>> & { limits?: Partial<ContainerLimits> };
  readonly resourceViolation?: Partial<ResourceViolation>;
  readonly occurredAt?: Date;
  readonly requestId?: string;
}

/** Request builders with valid defaults, run through the service's own validation. */
export interface Commands {
  submit(request?: Partial<SubmitEvaluationRequest>): Promise<CommandResult>;
  start(request: Partial<StartEvaluationRequest> & { evalId: string }): Promise<CommandResult>;
  complete(request: Partial<CompleteEvaluationRequest> & { evalId: string }): Promise<CommandResult>;
  fail(request: Partial<FailEvaluationRequest> & { evalId: string }): Promise<CommandResult>;
  cancel(request: Partial<CancelEvaluationRequest> & { evalId: string }): Promise<CommandResult>;
  recordMetrics(request: Partial<RecordMetricsRequest> & { evalId: string }): Promise<CommandResult>;
  recordSecurityEvent(request: SecurityReportRequest): Promise<CommandResult>;
}

export function commandsOf(executor: CommandExecutor, limits: Limits): Commands {
  return {
    submit: (r = {}) =>
      executor.execute(
        validateSubmit(
          SubmitEvaluationRequest.fromPartial({
            code: 'print("hello")',
            language: 'python',
            engine: 'docker',
            timeoutSeconds: 30,
            ...r,
          }),
          limits,
        ),
      ),
    start: (r) =>
      executor.execute(validateStart(StartEvaluationRequest.fromPartial({ executorId: 'exec-1', ...r }), limits)),
    complete: (r) => executor.execute(validateComplete(CompleteEvaluationRequest.fromPartial(r), limits)),
    fail: (r) => executor.execute(validateFail(FailEvaluationRequest.fromPartial(r), limits)),
    cancel: (r) => executor.execute(validateCancel(CancelEvaluationRequest.fromPartial(r), limits)),
    recordMetrics: (r) => executor.execute(validateRecordMetrics(RecordMetricsRequest.fromPartial(r), limits)),
    recordSecurityEvent: (r) =>
      executor.execute(
        validateRecordSecurityEvent(
          RecordSecurityEventRequest.fromPartial({
            ...r,
            ...(r.containerCreated !== undefined
              ? { containerCreated: ContainerCreated.fromPartial({ ...r.containerCreated }) }
              : {}),
          }),
          limits,
        ),
      ),
  };
}

/**
 * One spec's world: an isolated database, key prefix and bucket, and the command executor
 * built from the real adapters over them, plus direct connections to look behind it.
 */
/** The command side's blob writes on S3 alone (no fallback store): S3 down is UNAVAILABLE. */
export function s3Only(store: SharedBlobStore): BlobStore {
  return createFallbackStore({
    primary: store,
    fallback: undefined,
    retryPrimaryAfterMs: 0,
    now: Date.now,
    logger: silentLogger,
  });
}

export interface Harness {
  readonly env: TestEnvironment;
  readonly pool: Pool;
  /** A separate connection for inspection and manual transactions. */
  readonly sql: Client;
  readonly s3: S3Client;
  /** The publisher's connection (no offline queue, as in main.ts). */
  readonly redis: RedisClient;
  readonly store: EvaluationStore;
  readonly blobs: BlobStore;
  readonly publisher: EventPublisher;
  readonly clock: SteppingClock;
  readonly executor: CommandExecutor;
  readonly commands: Commands;
  /** Ids handed out by the id generator, in order. */
  readonly issuedIds: string[];
  /** Builds another executor over the same adapters, with some replaced. */
  executorWith(parts: { store?: EvaluationStore; blobs?: BlobStore; publisher?: EventPublisher }): CommandExecutor;
  close(): Promise<void>;
}

export async function createHarness(overrides: Record<string, string> = {}): Promise<Harness> {
  const env = await createTestEnvironment({ overrides });
  const closers: (() => Promise<void>)[] = [() => env.close()];
  const close = async (): Promise<void> => {
    for (const closer of closers.reverse()) await closer();
  };
  try {
    const pool = createPool({ url: env.config.databaseUrl, applicationName: EXECUTOR_APPLICATION, poolSize: 30 });
    closers.push(() => pool.end());
    const sql = new Client({
      connectionString: env.config.databaseUrl,
      application_name: 'crucible-command-it-inspect',
    });
    await sql.connect();
    closers.push(() => sql.end());
    const redis = createRedisClient(redisTargetOf(env.config), {
      enableOfflineQueue: false,
      lazyConnect: true,
      maxRetriesPerRequest: 1,
    });
    await redis.connect();
    closers.push(async () => void (await redis.quit()));
    const s3 = createS3Client(env.config.s3);
    closers.push(() => Promise.resolve(s3.destroy()));

    const store = createPostgresEvaluationStore(pool);
    const blobs = s3Only(createS3BlobStore(s3, env.config.s3.bucket, env.config.s3.sse, env.config.s3.multipart));
    const publisher = createRedisChangePublisher(redis, env.config.redisKeyPrefix, env.config.readModelPartitions);
    const clock = steppingClock();
    const issuedIds: string[] = [];
    const newId = (): string => {
      const id = `gen-${String(issuedIds.length + 1).padStart(4, '0')}`;
      issuedIds.push(id);
      return id;
    };
    const executorWith: Harness['executorWith'] = (parts) =>
      createCommandExecutor({
        store: parts.store ?? store,
        blobs: parts.blobs ?? blobs,
        publisher: parts.publisher ?? publisher,
        clock,
        newId,
        limits: env.config.limits,
        // Each executor is an instance of its own: it keeps its own recent states.
        recentStates: createRecentStates(env.config.commandStateCacheEntries),
        admission: { maxInProgress: env.config.maxPendingCommands, maxQueued: env.config.maxQueuedCommands },
        logger: silentLogger,
      });
    const executor = executorWith({});
    return {
      env,
      pool,
      sql,
      s3,
      redis,
      store,
      blobs,
      publisher,
      clock,
      executor,
      commands: commandsOf(executor, env.config.limits),
      issuedIds,
      executorWith,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** The columns eventsOf selects; `data` loosely typed: a test reads the fields of the event it expects. */
export type EventRow = Omit<EvaluationEventRow, 'transaction_id' | 'data_bytes' | 'data'> & {
  data: Record<string, unknown>;
};

export async function eventsOf(sql: Client, evalId: string): Promise<EventRow[]> {
  const { rows } = await sql.query<EventRow>(
    `SELECT position::text, eval_id, revision::text, event_type, data, request_id, command_hash, recorded_at
       FROM evaluation_events ev WHERE eval_id = $1 ORDER BY ev.position`,
    [evalId],
  );
  return rows;
}

export async function eventCount(sql: Client): Promise<number> {
  const { rows } = await sql.query<{ n: number }>('SELECT count(*)::int AS n FROM evaluation_events');
  return rows[0]?.n ?? 0;
}

/**
 * Asserts the whole log is dense: positions 1..n with no gap, the head at n, and each
 * evaluation's revisions 1..k in position order. Returns n.
 */
export async function denseLog(sql: Client): Promise<{ ok: boolean; count: number; problems: string[] }> {
  const { rows } = await sql.query<{ position: string; eval_id: string; revision: string }>(
    'SELECT ev.position::text, ev.eval_id, ev.revision::text FROM evaluation_events ev ORDER BY ev.position',
  );
  const head = await sql.query<{ position: string }>('SELECT position::text FROM event_log_head WHERE id = 1');
  const problems: string[] = [];
  const revisions = new Map<string, number>();
  rows.forEach((row, i) => {
    if (row.position !== String(i + 1)) problems.push(`row ${i + 1} has position ${row.position}`);
    const expected = (revisions.get(row.eval_id) ?? 0) + 1;
    if (row.revision !== String(expected))
      problems.push(`${row.eval_id} has revision ${row.revision} at ${row.position}, expected ${expected}`);
    revisions.set(row.eval_id, expected);
  });
  if (head.rows[0]?.position !== String(rows.length)) {
    problems.push(`head is ${head.rows[0]?.position ?? 'missing'}, log has ${rows.length} events`);
  }
  return { ok: problems.length === 0, count: rows.length, problems };
}

export { until } from '../../support/until';

/** Settles a promise into a value, so tests can race without unhandled rejections. */
export type Settled<T> = { status: 'fulfilled'; value: T } | { status: 'rejected'; reason: unknown };

export function track<T>(promise: Promise<T>): { settled: () => Settled<T> | undefined; done: Promise<Settled<T>> } {
  let outcome: Settled<T> | undefined;
  const done = promise.then(
    (value): Settled<T> => (outcome = { status: 'fulfilled', value }),
    (reason: unknown): Settled<T> => (outcome = { status: 'rejected', reason }),
  );
  return { settled: () => outcome, done };
}

export interface RacingStore {
  readonly store: EvaluationStore;
  /** Outcomes of `append` so far. */
  readonly appends: { appended: number; conflicts: number };
}

/**
 * Wraps a store so that its first `parties` loads all finish before any of them returns:
 * every racer then decides on the same state and writes, which forces the write-write race
 * (instead of hoping the scheduler produces it). Later loads pass straight through.
 */
export function racingStore(store: EvaluationStore, parties: number): RacingStore {
  const appends = { appended: 0, conflicts: 0 };
  let taken = 0;
  let arrived = 0;
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  return {
    appends,
    store: {
      async load(evalId, requestId, tenant) {
        if (taken >= parties) return store.load(evalId, requestId, tenant);
        taken += 1;
        try {
          return await store.load(evalId, requestId, tenant);
        } finally {
          arrived += 1;
          if (arrived === parties) release();
          await gate;
        }
      },
      async append(request) {
        const outcome = await store.append(request);
        if (outcome.kind === 'appended') appends.appended += 1;
        else appends.conflicts += 1;
        return outcome;
      },
    },
  };
}

/** What a command throws: validation throws before anything runs, the rest rejects. Fails if it succeeds. */
export async function rejection(command: () => Promise<unknown>): Promise<unknown> {
  try {
    await command();
  } catch (err) {
    return err;
  }
  throw new Error('expected the command to be refused');
}

/**
 * A write request decided by hand (to test the store's statement itself): `decision`, or a
 * submit of `evalId` from nothing to `toRevision`, in the default tenant.
 */
export function handWrittenRequest(
  decision: AppendRequest['decision'] | { readonly submit: string; readonly toRevision?: string },
  requestId?: string,
): AppendRequest {
  const written: AppendRequest['decision'] =
    'submit' in decision
      ? {
          kind: 'append',
          evalId: decision.submit,
          fromRevision: '0',
          toRevision: decision.toRevision ?? '1',
          status: 'queued',
          event: {
            type: 'EvaluationQueued',
            data: {
              codeHash: 'c'.repeat(64),
              codeSize: 1,
              language: 'python',
              engine: 'docker',
              timeoutSeconds: 30,
              metadata: {},
              createdAt: new Date().toISOString(),
              tenantId: DEFAULT_TENANT,
            },
          },
        }
      : decision;
  return {
    decision: written,
    tenant: DEFAULT_TENANT,
    commandHash: `hash-${written.evalId}-${written.toRevision}`,
    recordedAt: new Date(),
    reporter: 'hand-written',
    ...(requestId !== undefined ? { requestId } : {}),
  };
}
