import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { Metadata, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createRedisClient, redisTargetOf, type RedisClient } from '../../shared/redis';
import { Client } from 'pg';
import { createKeyLayout, type KeyLayout } from '../../services/query/read-models/keys';
import { archiveKey, decodeArchive } from '../../shared/archive';
import { DEFAULT_TENANT, EVENT_TYPE_TO_PROTO } from '../../shared/domain';
import type { AppendLogsRequest } from '../../shared/generated/crucible/storage/v1/command_service';
import {
  EvaluationStatus,
  FailureReason,
  LogStream,
  type Evaluation,
  type EvaluationUpdate,
} from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  OutputKind,
  SecurityEventKind,
  type EventLogEntry,
  type MetricRecord,
  type ReadLogsResponse,
  type ReadOutputResponse,
  type WatchEvaluationResponse,
  type WatchEvaluationsResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { createS3Client } from '../../shared/s3';
import { call, drainStream, expectError, readBytes, readStream, untilAnswered, type Clients } from '../support/clients';
import { deleteKeys } from '../support/redis-keys';
import { aSubmission } from '../support/requests';
import { startServices, type RunningServices } from '../support/services';

const CLI = join(__dirname, '..', '..', 'services', 'command', 'cli', 'retention.js');
const DAY_MS = 86_400_000;
/** Lowered so that C's output, past it, is kept in S3 while the test stays small. */
const INLINE_OUTPUT_MAX_BYTES = 64 * 1024;
const LARGE_OUTPUT = Buffer.alloc(100 * 1024, 'kept in s3 ');
/** Long enough to read every answer of the hot tier before the sweep takes A, B and C out of Redis. */
const HOT_RETENTION_SECONDS = 5;
const OVERRIDES = {
  HOT_RETENTION: `${HOT_RETENTION_SECONDS}s`,
  HOT_SWEEP_INTERVAL_SECONDS: '1',
  INLINE_OUTPUT_MAX_BYTES: String(INLINE_OUTPUT_MAX_BYTES),
};

/** An ISO time `days` from now: what --as-of judges ages by. */
const daysAhead = (days: number): string => new Date(Date.now() + days * DAY_MS).toISOString();

interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * `npm run retention -- args` as a child process with the environment's variables. With
 * `killOnFirstArchived`, SIGKILLed as soon as its stdout holds a first `archived ` line.
 */
function retention(
  env: Record<string, string>,
  args: readonly string[],
  options: { killOnFirstArchived?: boolean } = {},
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000); // a hung run fails the test, not the suite
    child.stdout.on('data', (data: Buffer) => {
      stdout += data.toString();
      if (options.killOnFirstArchived === true && /^archived /m.test(stdout)) child.kill('SIGKILL');
    });
    child.stderr.on('data', (data: Buffer) => {
      stderr += data.toString();
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A run to its end (another one's lock, still held by a killed run's session, is waited out). */
async function retentionToEnd(env: Record<string, string>, args: readonly string[]): Promise<CliRun> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const run = await retention(env, args);
    if (run.code !== 3 || Date.now() > deadline) return run;
  }
}

/** The JSON report a finished run prints last. */
function reportOf(run: CliRun): Record<string, unknown> {
  expect(run.code, `exit status; stderr:\n${run.stderr}`).to.equal(0);
  const lines = run.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1] ?? '{}') as Record<string, unknown>;
}

const archivedIdsOf = (run: CliRun): string[] =>
  run.stdout
    .split('\n')
    .filter((l) => l.startsWith('archived '))
    .map((l) => l.slice('archived '.length));

/** Polls `condition` (a round trip each time) until it holds; fails after `timeoutMs`. */
async function until(what: string, condition: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Every message of a server stream that ends by itself (within the call's deadline), or its error. */
async function drain<T>(stream: ClientReadableStream<T>): Promise<T[]> {
  const { messages, failed } = await drainStream(stream);
  if (failed !== undefined) throw failed;
  return messages;
}

const within = (ms: number): Partial<{ deadline: Date }> => ({ deadline: new Date(Date.now() + ms) });

/** A call's answer, or its failure as code and message: both are answers to compare. */
async function settle<T>(promise: Promise<T>): Promise<T | { failed: number; details: string }> {
  try {
    return await promise;
  } catch (err) {
    const e = err as ServiceError;
    if (typeof e.code !== 'number') throw err;
    return { failed: e.code, details: e.details };
  }
}

const digest = (bytes: Buffer): string =>
  `${bytes.length} bytes sha256 ${createHash('sha256').update(bytes).digest('hex')}`;

function appendLogs(clients: Clients, messages: AppendLogsRequest[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const stream = clients.command.appendLogs(new Metadata(), within(10_000), (err) =>
      err === null ? resolve() : reject(err),
    );
    for (const message of messages) stream.write(message);
    stream.end();
  });
}

async function allEvents(clients: Clients, evalId: string): Promise<EventLogEntry[]> {
  const { query } = clients;
  const events: EventLogEntry[] = [];
  let pageToken = '';
  do {
    const page = await call(query, query.getEvaluationEvents, { evalId, afterRevision: '0', pageSize: 2, pageToken });
    events.push(...page.events);
    pageToken = page.nextPageToken;
  } while (pageToken !== '');
  return events;
}

async function allMetrics(clients: Clients, evalId: string): Promise<unknown[]> {
  const { query } = clients;
  const points: unknown[] = [];
  let pageToken = '';
  do {
    const page = await call(query, query.getEvaluationMetrics, { evalId, names: [], pageSize: 2, pageToken });
    points.push(...page.metrics);
    pageToken = page.nextPageToken;
  } while (pageToken !== '');
  return points;
}

async function readOutput(clients: Clients, evalId: string, kind: OutputKind): Promise<string> {
  const bytes = await readBytes(
    clients.query.readOutput({ evalId, kind, offset: '0', length: '0' }, new Metadata(), within(10_000)),
    (m: ReadOutputResponse) => m.chunk,
  );
  return digest(bytes);
}

async function readLogs(clients: Clients, evalId: string, stream: LogStream): Promise<string> {
  const bytes = await readBytes(
    clients.query.readLogs({ evalId, stream, offset: '0', length: '0', follow: false }, new Metadata(), within(10_000)),
    (m: ReadLogsResponse) => m.data,
  );
  return bytes.toString();
}

/** The updates of a WatchEvaluation of an ended evaluation, which ends by itself. */
async function watched(clients: Clients, evalId: string, afterRevision?: string): Promise<EvaluationUpdate[]> {
  const messages = await drain<WatchEvaluationResponse>(
    clients.query.watchEvaluation(
      { evalId, ...(afterRevision !== undefined ? { afterRevision } : {}) },
      new Metadata(),
      within(10_000),
    ),
  );
  return messages.flatMap((m) => (m.update !== undefined ? [m.update] : []));
}

type Answers = Record<string, unknown>;

/**
 * Everything the query service answers about an ended evaluation, read each way there is (a
 * failure is an answer too), but the reads named in `without`.
 */
async function answersOf(clients: Clients, evalId: string, without: readonly string[] = []): Promise<Answers> {
  const { query } = clients;
  const reads: Record<string, () => Promise<unknown>> = {
    getEvaluation: () => call(query, query.getEvaluation, { evalId }),
    waitEvaluation: () => call(query, query.waitEvaluation, { evalId }),
    watchEvaluation: () => watched(clients, evalId),
    watchEvaluationFromStart: () => watched(clients, evalId, '0'),
    events: () => allEvents(clients, evalId),
    metrics: () => allMetrics(clients, evalId),
    output: () => readOutput(clients, evalId, OutputKind.OUTPUT_KIND_OUTPUT),
    error: () => readOutput(clients, evalId, OutputKind.OUTPUT_KIND_ERROR),
    code: () => readOutput(clients, evalId, OutputKind.OUTPUT_KIND_CODE),
    stdout: () => readLogs(clients, evalId, LogStream.LOG_STREAM_STDOUT),
    stderr: () => readLogs(clients, evalId, LogStream.LOG_STREAM_STDERR),
    securityEvents: () =>
      call(query, query.listSecurityEvents, {
        evalId,
        containerId: '',
        kind: SecurityEventKind.SECURITY_EVENT_KIND_UNSPECIFIED,
        violationTypes: [],
        pageSize: 100,
        pageToken: '',
      }),
  };
  const answers: Answers = {};
  for (const [read, ask] of Object.entries(reads)) if (!without.includes(read)) answers[read] = await settle(ask());
  return answers;
}

/** Each answer compared on its own with the one before: a difference names the read that differs. */
function expectSameAnswers(actual: Answers, expected: Answers | undefined, label: string): void {
  expect(Object.keys(actual), label).to.have.length.greaterThan(0);
  for (const [read, answer] of Object.entries(actual))
    expect(answer, `${label}: ${read}`).to.deep.equal(expected?.[read]);
}

async function listed(clients: Clients): Promise<{ ids: string[]; coversEndedSince: Date | undefined }> {
  const { query } = clients;
  const ids: string[] = [];
  let pageToken = '';
  let coversEndedSince: Date | undefined;
  do {
    const page = await call(query, query.listEvaluations, {
      status: EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED,
      pageSize: 100,
      pageToken,
    });
    ids.push(...page.evaluations.map((e) => e.evalId));
    coversEndedSince = page.coversEndedSince;
    pageToken = page.nextPageToken;
  } while (pageToken !== '');
  return { ids: ids.sort(), coversEndedSince };
}

/** The owner's view of PostgreSQL (the spec's own inspection). */
async function withDatabase<T>(url: string, work: (db: Client) => Promise<T>): Promise<T> {
  const db = new Client({ connectionString: url });
  await db.connect();
  try {
    return await work(db);
  } finally {
    await db.end();
  }
}

async function count(db: Client, sql: string, values: unknown[] = []): Promise<number> {
  return (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, values)).rows[0]?.n ?? -1;
}

async function archiveObjects(s3: S3Client, bucket: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: 'archive/', ContinuationToken: token }),
    );
    keys.push(...(page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [o.Key])));
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return keys.sort();
}

async function objectExists(s3: S3Client, bucket: string, key: string): Promise<boolean> {
  try {
    await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (err) {
    if ((err as { name?: string }).name === 'NotFound') return false;
    throw err;
  }
}

async function getObject(s3: S3Client, bucket: string, key: string): Promise<Buffer> {
  const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from((await object.Body?.transformToByteArray()) ?? []);
}

/** The same fields of an event, as GetEvaluationEvents and the archive each give them. */
const servedEvent = (e: EventLogEntry): unknown => ({
  position: e.position,
  revision: e.revision,
  type: e.eventType,
  recordedAt: e.recordedAt?.toISOString(),
  data: e.data,
  reporter: e.reporter,
});

describe('e2e: retention and tiering (npm run retention, HOT_RETENTION): every read answers the same from every tier', function () {
  this.timeout(60_000);

  describe('an evaluation of each kind, from Redis to PostgreSQL to the S3 archive to expired logs', () => {
    let services: RunningServices;
    let clients: Clients;
    let redis: RedisClient;
    let s3: S3Client;
    let layout: KeyLayout;
    let ownerUrl: string;
    let bucket: string;
    const ids = { a: 'ret-a', b: 'ret-b', c: 'ret-c', live: 'ret-live' };
    const ended = [ids.a, ids.b, ids.c];
    /** Every answer about A, B and C while they were still in Redis. */
    const hot = new Map<string, Answers>();
    let hotRecords = 0;
    let hotList: string[] = [];
    let positionsOfB: string[] = [];
    let liveBefore: Evaluation | undefined;
    let liveFirst = 0n;
    let endedEvents = 0;
    let horizon = '';

    const recordKey = (evalId: string): string => layout.record(layout.partitionOf(evalId), evalId);
    const inRedis = async (evalIds: readonly string[]): Promise<number> => redis.exists(...evalIds.map(recordKey));
    const leftRedis = (): Promise<void> =>
      until('A, B and C to leave Redis (HOT_RETENTION)', async () => (await inRedis(ended)) === 0);

    before(async () => {
      services = await startServices({ overrides: OVERRIDES });
      clients = services.clients;
      const { config } = services.environment;
      redis = createRedisClient(redisTargetOf(config));
      s3 = createS3Client(config.s3);
      layout = createKeyLayout(config.redisKeyPrefix, config.readModelPartitions);
      ownerUrl = config.databaseUrl;
      bucket = config.s3.bucket;

      const { command, query } = clients;
      const start = (evalId: string) =>
        call(command, command.startEvaluation, {
          evalId,
          executorId: 'exec-1',
          containerId: `c-${evalId}`,
          requestId: '',
        });
      // A: completed, with code, metrics, logs, a security event and a small (inline) output.
      await call(command, command.submitEvaluation, aSubmission({ evalId: ids.a, code: 'print("a")\n' }));
      await call(command, command.recordSecurityEvent, {
        containerCreated: {
          evalId: ids.a,
          containerId: 'sandbox-a',
          image: 'python:3.12',
          limits: {
            cpuCores: 1,
            memoryBytes: '1073741824',
            pids: '64',
            network: 'none',
            diskBytes: '0',
            timeoutSeconds: 60,
          },
        },
        requestId: '',
      });
      await start(ids.a);
      await call(command, command.recordMetrics, {
        evalId: ids.a,
        metrics: [
          { name: 'loss', value: 0.9, unit: '', step: '1' },
          { name: 'loss', value: 0.5, unit: '', step: '2' },
          { name: 'acc', value: 0.25, unit: '%', step: '1' },
          { name: 'loss', value: 0.3, unit: '', step: '3' },
        ],
        requestId: '',
      });
      const stdout = LogStream.LOG_STREAM_STDOUT;
      await appendLogs(clients, [
        { header: { evalId: ids.a, stream: stdout } },
        { chunk: { offset: '0', data: Buffer.from('line 1\n') } },
      ]);
      await appendLogs(clients, [
        { header: { evalId: ids.a, stream: stdout } },
        { chunk: { offset: '7', data: Buffer.from('line 2\n') } },
      ]);
      await appendLogs(clients, [
        { header: { evalId: ids.a, stream: LogStream.LOG_STREAM_STDERR } },
        { chunk: { offset: '0', data: Buffer.from('warning\n') } },
      ]);
      await call(command, command.completeEvaluation, {
        evalId: ids.a,
        exitCode: 0,
        output: Buffer.from('{"answer": 42}'),
        requestId: '',
      });
      // B: failed.
      await call(command, command.submitEvaluation, aSubmission({ evalId: ids.b, code: 'raise SystemExit(1)' }));
      await start(ids.b);
      await call(command, command.failEvaluation, {
        evalId: ids.b,
        error: 'Traceback: boom',
        exitCode: 1,
        reason: FailureReason.FAILURE_REASON_ERROR,
        requestId: '',
      });
      // C: an output past the inline limit, kept in S3.
      await call(command, command.submitEvaluation, aSubmission({ evalId: ids.c, code: 'print("c" * 102400)' }));
      await start(ids.c);
      await call(command, command.completeEvaluation, {
        evalId: ids.c,
        exitCode: 0,
        output: LARGE_OUTPUT,
        requestId: '',
      });
      // L: submitted after the others ended (so the horizon passes them and stops below it), left running.
      const submitted = await call(command, command.submitEvaluation, aSubmission({ evalId: ids.live }));
      liveFirst = BigInt(submitted.position);
      const started = await start(ids.live);
      liveBefore = (await call(query, query.getEvaluation, { evalId: ids.live, minPosition: started.position }))
        .evaluation;

      // The hot tier, quickly (HOT_RETENTION is short): every answer while the records are in Redis.
      for (const evalId of ended) hot.set(evalId, await answersOf(clients, evalId));
      hotRecords = await inRedis(ended);
      hotList = (await listed(clients)).ids;
    });

    after(async () => {
      redis?.disconnect();
      s3?.destroy();
      await services?.close();
    });

    it('reads from Redis (the hot tier) answer what was made: the answers every tier is compared with', () => {
      expect(hotRecords, 'the answers were read while A, B and C were in Redis (raise HOT_RETENTION if slow)').to.equal(
        3,
      );
      expect(hotList).to.deep.equal([...ended, ids.live].sort());
      const [a, b, c] = ended.map((id) => hot.get(id) ?? {}) as [Answers, Answers, Answers];
      expect(a.stdout).to.equal('line 1\nline 2\n');
      expect(a.stderr).to.equal('warning\n');
      expect(a.output).to.equal(digest(Buffer.from('{"answer": 42}')));
      expect(a.code).to.equal(digest(Buffer.from('print("a")\n')));
      expect((a.metrics as MetricRecord[]).map((m) => [m.name, m.step, m.value])).to.deep.equal([
        ['acc', '1', 0.25],
        ['loss', '1', 0.9],
        ['loss', '2', 0.5],
        ['loss', '3', 0.3],
      ]);
      expect((a.securityEvents as { events: unknown[] }).events).to.have.length(1);
      expect(b.error).to.equal(digest(Buffer.from('Traceback: boom')));
      expect((b.getEvaluation as { evaluation?: Evaluation }).evaluation?.status).to.equal(
        EvaluationStatus.EVALUATION_STATUS_FAILED,
      );
      expect(c.output).to.equal(digest(LARGE_OUTPUT));
      for (const [evalId, answers] of hot) {
        const events = answers.events as EventLogEntry[];
        expect(
          (answers.watchEvaluationFromStart as EvaluationUpdate[]).map((u) => u.revision),
          `${evalId}: a watch from revision 0 replays every revision`,
        ).to.deep.equal(events.map((e) => e.revision));
        expect((answers.watchEvaluation as EvaluationUpdate[]).map((u) => u.revision)).to.deep.equal([
          events[events.length - 1]?.revision,
        ]);
        endedEvents += events.length;
      }
      positionsOfB = (b.events as EventLogEntry[]).map((e) => e.position);
    });

    it('(a) once A, B and C left Redis they answer as before; lists leave them out and carry covers_ended_since', async () => {
      const { query } = clients;
      await leftRedis();
      expect(await inRedis([ids.live]), 'the live one stays').to.equal(1);
      // B's positions cross from one digit to two: its fold from PostgreSQL must order them as numbers.
      expect(
        positionsOfB.some((p) => p.length === 1) && positionsOfB.some((p) => p.length === 2),
        'the premise',
      ).to.equal(true);
      for (const evalId of [ids.a, ids.b, ids.c])
        expectSameAnswers(await answersOf(clients, evalId), hot.get(evalId), evalId);
      const cold = await listed(clients);
      expect(cold.ids).to.deep.equal([ids.live]);
      const coverage = cold.coversEndedSince?.getTime() ?? 0;
      expect(coverage, 'covers_ended_since is HOT_RETENTION ago').to.be.within(
        Date.now() - HOT_RETENTION_SECONDS * 1000 - 5000,
        Date.now() - HOT_RETENTION_SECONDS * 1000 + 1000,
      );
      const completed = await call(query, query.countEvaluations, {
        filter: {
          statuses: [EvaluationStatus.EVALUATION_STATUS_COMPLETED],
          language: '',
          engine: '',
          executorId: '',
          metadata: {},
        },
      });
      expect(completed.count).to.equal('0');
      expect(completed.coversEndedSince, 'CountEvaluations carries covers_ended_since').to.be.instanceOf(Date);
    });

    it('(b) retention as of 100 days on: archived to S3, events below the horizon gone, logs in S3, reads the same', async () => {
      await leftRedis();
      const inlineLogs = await withDatabase(ownerUrl, (db) =>
        count(db, `evaluation_log_segments WHERE eval_id = $1 AND content IS NOT NULL`, [ids.a]),
      );
      expect(inlineLogs, 'the logs were kept in PostgreSQL').to.equal(3);
      const run = await retentionToEnd(services.environment.env, ['--early', '--as-of', daysAhead(100)]);
      const report = reportOf(run);
      expect(archivedIdsOf(run).sort()).to.deep.equal(ended);
      expect(report).to.include({
        dryRun: false,
        archived: 3,
        skipped: 0,
        eventsDeleted: endedEvents,
        horizon: String(liveFirst - 1n),
        logSegmentsMoved: 3,
        logSegmentsDeleted: 0,
        securityRecordsPurged: 0,
      });
      horizon = report.horizon as string;

      const tables = await withDatabase(ownerUrl, async (db) => ({
        archived: (
          await db.query<{ eval_id: string }>(`SELECT eval_id FROM archived_evaluations ORDER BY eval_id`)
        ).rows.map((r) => r.eval_id),
        horizon: (await db.query<{ p: string }>(`SELECT position::text AS p FROM event_log_horizon`)).rows[0]?.p,
        endedEvents: await count(db, `evaluation_events WHERE eval_id = ANY ($1)`, [ended]),
        liveEvents: await count(db, `evaluation_events WHERE eval_id = $1`, [ids.live]),
        inlineBodies: await count(db, `evaluation_bodies WHERE eval_id = ANY ($1) AND content IS NOT NULL`, [ended]),
        s3Bodies: await count(db, `evaluation_bodies WHERE eval_id = $1 AND blob_store = 's3'`, [ids.c]),
        metrics: await count(db, `evaluation_metrics WHERE eval_id = ANY ($1)`, [ended]),
        inlineLogs: await count(db, `evaluation_log_segments WHERE content IS NOT NULL`),
        logKeys: (
          await db.query<{ s3_key: string }>(
            `SELECT s3_key FROM evaluation_log_segments WHERE eval_id = $1 AND blob_store = 's3' ORDER BY s3_key`,
            [ids.a],
          )
        ).rows.map((r) => r.s3_key),
        rows: await count(db, `evaluations WHERE eval_id = ANY ($1)`, [ended]),
      }));
      expect(tables).to.deep.include({
        archived: ended,
        horizon,
        endedEvents: 0,
        liveEvents: 2,
        inlineBodies: 0,
        s3Bodies: 1,
        metrics: 0,
        inlineLogs: 0,
        rows: 3,
      });
      expect(tables.logKeys).to.have.length(3);
      for (const key of tables.logKeys) expect(await objectExists(s3, bucket, key), key).to.equal(true);
      expect(await archiveObjects(s3, bucket)).to.deep.equal(ended.map((id) => archiveKey(DEFAULT_TENANT, id)).sort());

      for (const evalId of ended) expectSameAnswers(await answersOf(clients, evalId), hot.get(evalId), evalId);
      const { query } = clients;
      expect((await call(query, query.getEvaluation, { evalId: ids.live })).evaluation).to.deep.equal(liveBefore);
      expect((await listed(clients)).ids).to.deep.equal([ids.live]);
    });

    it('(c) retention as of 400 days on: the logs are deleted (ReadLogs says when), every other read the same', async () => {
      expect(horizon, 'runs after (b)').to.not.equal('');
      const logKeys = await withDatabase(ownerUrl, async (db) =>
        (
          await db.query<{ s3_key: string }>(`SELECT s3_key FROM evaluation_log_segments WHERE eval_id = $1`, [ids.a])
        ).rows.map((r) => r.s3_key),
      );
      expect(logKeys).to.have.length(3);
      const run = await retentionToEnd(services.environment.env, ['--early', '--as-of', daysAhead(400)]);
      expect(reportOf(run)).to.include({
        archived: 0,
        logSegmentsMoved: 0,
        logSegmentsDeleted: 3,
        horizon,
      });
      for (const key of logKeys) expect(await objectExists(s3, bucket, key), key).to.equal(false);
      const expired = await withDatabase(ownerUrl, (db) => count(db, `evaluations WHERE logs_expired_at IS NOT NULL`));
      expect(expired, 'only A had logs').to.equal(1);

      for (const stream of [LogStream.LOG_STREAM_STDOUT, LogStream.LOG_STREAM_STDERR]) {
        const gone = await expectError(readLogs(clients, ids.a, stream));
        expect(gone.code).to.equal(status.NOT_FOUND);
        expect(gone.details).to.match(
          new RegExp(`^the logs of evaluation ${ids.a} were deleted at \\d{4}-\\d\\d-\\d\\dT\\S+Z, past LOG_RETENTION`),
        );
      }
      for (const evalId of ended) {
        const without = evalId === ids.a ? ['stdout', 'stderr'] : [];
        expectSameAnswers(await answersOf(clients, evalId, without), hot.get(evalId), evalId);
      }
    });

    it('a watch resuming below the horizon is OUT_OF_RANGE naming it, from it goes on; a flushed Redis is rebuilt from it', async () => {
      const { query } = clients;
      expect(Number(horizon), 'runs after (b)').to.be.greaterThan(1);
      const outOfRange = `oldest resumable position is ${horizon}; re-read state with ListEvaluations and resume from ${horizon}`;
      const resumeFrom = (afterPosition: string) =>
        drain(query.watchEvaluations({ statuses: [], evalIds: [], afterPosition }, new Metadata(), within(10_000)));
      const firstUpdate = async (): Promise<EvaluationUpdate | undefined> => {
        const resumed = readStream<WatchEvaluationsResponse>(
          query.watchEvaluations({ statuses: [], evalIds: [], afterPosition: horizon }, new Metadata(), within(10_000)),
        );
        let first = await resumed.next();
        while (first.update === undefined) first = await resumed.next();
        resumed.cancel();
        return first.update;
      };
      for (const after of ['0', String(BigInt(horizon) - 1n)]) {
        const err = await expectError(resumeFrom(after));
        expect(err.code, `after_position ${after}`).to.equal(status.OUT_OF_RANGE);
        expect(err.details).to.equal(outOfRange);
      }
      const first = await firstUpdate();
      expect([first?.position, first?.evaluation?.evalId]).to.deep.equal([String(liveFirst), ids.live]);

      // Redis loses every key of this query service: it rebuilds the read models from the horizon.
      const logged = services.query.logs().length;
      expect(await deleteKeys(redis, `${services.environment.config.redisKeyPrefix}:*`)).to.be.greaterThan(0);
      await until(
        'the query service to start again at the horizon',
        () =>
          Promise.resolve(
            services.query
              .logs()
              .slice(logged)
              .includes(`"msg":"starting at the event log horizon: the events below it were archived"`),
          ),
        20_000,
      );
      const live = await untilAnswered(() => call(query, query.getEvaluation, { evalId: ids.live }), 20_000);
      expect(live.answer.evaluation).to.deep.equal(liveBefore);
      for (const evalId of ended) {
        const archived = await untilAnswered(() => call(query, query.getEvaluation, { evalId }), 20_000);
        expect(archived.answer, evalId).to.deep.equal(hot.get(evalId)?.getEvaluation);
      }
      expect((await listed(clients)).ids).to.deep.equal([ids.live]);
      expect((await expectError(resumeFrom('0'))).details).to.equal(outOfRange);
      const again = await firstUpdate();
      expect([again?.position, again?.evaluation?.evalId]).to.deep.equal([String(liveFirst), ids.live]);
    });
  });

  describe('a run killed in the middle, a dry run, a run while another holds the lock', () => {
    const ENDED = 40;
    let services: RunningServices;
    let clients: Clients;
    let redis: RedisClient;
    let layout: KeyLayout;
    let s3: S3Client;
    let ownerUrl: string;
    let bucket: string;
    const evalIds = Array.from({ length: ENDED }, (_, i) => `kill-${String(i).padStart(2, '0')}`);
    const eventsBefore = new Map<string, EventLogEntry[]>();
    /** A completed one with a metric point, a failed one, a completed one. */
    const sample = [evalIds[0] as string, evalIds[17] as string, evalIds[ENDED - 1] as string];
    const sampleBefore = new Map<string, Answers>();
    const sampleReads = (evalId: string): Promise<Answers> =>
      answersOf(clients, evalId, ['watchEvaluationFromStart', 'securityEvents']);

    before(async () => {
      services = await startServices({ overrides: OVERRIDES });
      clients = services.clients;
      const { config } = services.environment;
      redis = createRedisClient(redisTargetOf(config));
      layout = createKeyLayout(config.redisKeyPrefix, config.readModelPartitions);
      s3 = createS3Client(config.s3);
      ownerUrl = config.databaseUrl;
      bucket = config.s3.bucket;
      const { command, query } = clients;
      for (const [i, evalId] of evalIds.entries()) {
        await call(command, command.submitEvaluation, aSubmission({ evalId, code: `print(${i})` }));
        await call(command, command.startEvaluation, { evalId, executorId: 'exec-1', containerId: 'c', requestId: '' });
        if (i % 3 === 0)
          await call(command, command.recordMetrics, {
            evalId,
            metrics: [{ name: 'loss', value: 1 / (i + 1), unit: '', step: '1' }],
            requestId: '',
          });
        const last =
          i % 4 === 1
            ? await call(command, command.failEvaluation, {
                evalId,
                error: `boom ${i}`,
                exitCode: 2,
                reason: FailureReason.FAILURE_REASON_ERROR,
                requestId: '',
              })
            : await call(command, command.completeEvaluation, {
                evalId,
                exitCode: 0,
                output: Buffer.from(`out ${i}`),
                requestId: '',
              });
        if (sample.includes(evalId)) {
          // Read at once, from Redis (HOT_RETENTION is short).
          await call(query, query.getEvaluation, { evalId, minPosition: last.position });
          sampleBefore.set(evalId, await sampleReads(evalId));
        }
      }
      await call(command, command.submitEvaluation, aSubmission({ evalId: 'kill-live' }));
      for (const evalId of evalIds) eventsBefore.set(evalId, await allEvents(clients, evalId));
    });

    after(async () => {
      redis?.disconnect();
      s3?.destroy();
      await services?.close();
    });

    const tableCounts = (): Promise<Record<string, unknown>> =>
      withDatabase(ownerUrl, async (db) => ({
        evaluations: await count(db, 'evaluations'),
        archived: await count(db, 'archived_evaluations'),
        events: await count(db, 'evaluation_events'),
        bodies: await count(db, 'evaluation_bodies'),
        inlineBodies: await count(db, 'evaluation_bodies WHERE content IS NOT NULL'),
        metrics: await count(db, 'evaluation_metrics'),
        runs: await count(db, 'retention_runs'),
        horizon: (await db.query<{ p: string }>(`SELECT position::text AS p FROM event_log_horizon`)).rows[0]?.p,
      }));

    it('a dry run reports what a run would archive and changes nothing', async () => {
      const counts = await tableCounts();
      expect(counts).to.include({ archived: 0, horizon: '0', runs: 0 });
      const run = await retentionToEnd(services.environment.env, ['--dry-run', '--as-of', daysAhead(100)]);
      const report = reportOf(run);
      expect(report).to.include({ dryRun: true, archived: ENDED });
      expect(report.archiveBytes).to.be.greaterThan(0);
      expect(archivedIdsOf(run)).to.deep.equal([]);
      expect(await tableCounts()).to.deep.equal(counts);
      expect(await archiveObjects(s3, bucket)).to.deep.equal([]);
    });

    it('a run while another holds the retention lock exits 3 and does nothing', async () => {
      const counts = await tableCounts();
      const run = await withDatabase(ownerUrl, async (db) => {
        await db.query(`SELECT pg_advisory_lock(hashtext('crucible-retention'))`);
        return retention(services.environment.env, ['--early', '--as-of', daysAhead(100)]);
      });
      expect(run.code, run.stderr).to.equal(3);
      expect(run.stderr).to.contain('another retention run holds the lock');
      expect(run.stdout).to.equal('');
      expect(await tableCounts()).to.deep.equal(counts);
      expect(await archiveObjects(s3, bucket)).to.deep.equal([]);
    });

    it('kill -9 after the first archived, run again: every evaluation archived once, whole, reads the same', async () => {
      const asOf = daysAhead(100);
      const killed = await retention(services.environment.env, ['--early', '--as-of', asOf], {
        killOnFirstArchived: true,
      });
      const printed = archivedIdsOf(killed);
      const afterKill = await withDatabase(ownerUrl, (db) => count(db, 'archived_evaluations'));
      // Whether the kill landed mid-run is timing: said, not asserted.
      console.log(
        `      killed run: ${killed.signal ?? `exit ${killed.code}`}, ${printed.length} printed, ` +
          `${afterKill} of ${ENDED} archived when it died`,
      );
      expect(printed.length).to.be.greaterThan(0);
      expect(afterKill).to.be.at.least(printed.length);

      const second = await retentionToEnd(services.environment.env, ['--early', '--as-of', asOf]);
      const report = reportOf(second);
      expect(report).to.include({ archived: ENDED - afterKill, skipped: 0 });
      const all = [...printed, ...archivedIdsOf(second)];
      expect(new Set(all).size, 'no evaluation archived twice').to.equal(all.length);

      const tables = await withDatabase(ownerUrl, async (db) => ({
        archived: (
          await db.query<{ eval_id: string; archive_key: string; events: number }>(
            `SELECT eval_id, archive_key, events FROM archived_evaluations ORDER BY eval_id`,
          )
        ).rows,
        endedEvents: await count(db, `evaluation_events WHERE eval_id = ANY ($1)`, [evalIds]),
        liveEvents: await count(db, `evaluation_events WHERE eval_id = 'kill-live'`),
      }));
      expect(tables.archived.map((r) => r.eval_id)).to.deep.equal(evalIds);
      expect(tables.endedEvents, 'the horizon passed every ended one').to.equal(0);
      expect(tables.liveEvents).to.equal(1);
      expect(await archiveObjects(s3, bucket)).to.deep.equal(tables.archived.map((r) => r.archive_key).sort());
      for (const row of tables.archived) {
        const archive = decodeArchive(await getObject(s3, bucket, row.archive_key));
        const served = (eventsBefore.get(row.eval_id) ?? []).map(servedEvent);
        expect(archive.evalId).to.equal(row.eval_id);
        expect(row.events).to.equal(served.length);
        expect(
          archive.events.map((e) => ({
            position: e.position,
            revision: e.revision,
            type: EVENT_TYPE_TO_PROTO[e.event.type],
            recordedAt: e.recordedAt,
            data: e.event.data,
            reporter: e.reporter ?? '',
          })),
          row.eval_id,
        ).to.deep.equal(served);
      }

      // Read from the archive: out of Redis (HOT_RETENTION) and out of the log (the horizon).
      await until(
        'the sample to leave Redis',
        async () => (await redis.exists(...sample.map((id) => layout.record(layout.partitionOf(id), id)))) === 0,
      );
      for (const evalId of sample) expectSameAnswers(await sampleReads(evalId), sampleBefore.get(evalId), evalId);
    });
  });

  it('refuses a bad --as-of with exit status 64, naming the option, before touching anything', async () => {
    const run = await retention({ ENVIRONMENT: 'test' }, ['--as-of', 'nope']);
    expect(run.code).to.equal(64);
    expect(run.stderr).to.contain('--as-of must be an ISO 8601 time');
    expect(run.stderr).to.contain('"nope"');
    expect(run.stdout).to.equal('');
    // A time to come deletes early: only with --dry-run, or --early said out loud.
    const ahead = await retention({ ENVIRONMENT: 'test' }, ['--as-of', daysAhead(400)]);
    expect(ahead.code).to.equal(64);
    expect(ahead.stderr).to.contain('--as-of a time to come archives and deletes early');
  });
});
