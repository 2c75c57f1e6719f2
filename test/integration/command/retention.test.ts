import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { Client } from 'pg';
import {
  archiveKey,
  decodeArchive,
  type ArchivedEvent,
  type ArchivedMetric,
  type EvaluationArchive,
} from '../../../shared/archive';
import { createS3BlobStore, type BlobStore } from '../../../shared/blobs';
import type { EvaluationEvent } from '../../../shared/domain';
import { AlreadyExistsError, FailedPreconditionError, NotFoundError } from '../../../shared/errors';
import { Severity, ViolationType } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { silentLogger } from '../../../shared/logging';
import type { LogChunkIn } from '../../../services/command/application/log-appender';
import {
  runRetention,
  type RetentionPolicy,
  type RetentionReport,
} from '../../../services/command/application/retention';
import type { CommandResult } from '../../../services/command/domain';
import { createPostgresRetentionStore, type RetentionStore } from '../../../services/command/postgres/retention-store';
import { createHarness, rejection, type Harness } from './harness';

/** The harness's clock: 2025-01-01T00:00:00Z plus one second per reading. */
const DAY_ONE = Date.UTC(2025, 0, 1);
const DAY = 86_400_000;
/** A retention longer than the data is old: that tier keeps everything. */
const NEVER = 100 * 365 * DAY;
const TENANT = 'default';

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** The tables retention reads or changes. */
const TABLES = [
  'evaluations',
  'evaluation_events',
  'evaluation_bodies',
  'evaluation_metrics',
  'evaluation_log_segments',
  'security_audit',
  'security_events',
  'archived_evaluations',
  'retention_runs',
];

async function* bytesAt(offset: number, data: string | Buffer): AsyncGenerator<LogChunkIn> {
  await Promise.resolve();
  yield { offset, data: Buffer.isBuffer(data) ? data : Buffer.from(data) };
}

describe('retention: the archive, the horizon, logs and security records (PostgreSQL and S3)', function () {
  this.timeout(60_000);
  let h: Harness;
  let blobs: BlobStore;
  let store: RetentionStore;

  // A world per test: the horizon walks the whole log and the purge takes every table's records,
  // so a test's run would act on the data of the tests before it (which no one may delete).
  beforeEach(async () => {
    // Outputs and log segments above 1 KiB go to S3, so that both homes are exercised.
    h = await createHarness({ INLINE_OUTPUT_MAX_BYTES: '1024' });
    blobs = createS3BlobStore(h.s3, h.env.config.s3.bucket);
    store = createPostgresRetentionStore(h.pool);
  });
  afterEach(async () => {
    await h?.close();
  });

  /**
   * A retention clock ACTIVE_RETENTION (a day, in `retain`) after the harness's next reading:
   * everything recorded so far is older than the retention, everything recorded later younger.
   */
  function clockAfterNow(): Date {
    return new Date(h.clock.now().getTime() + DAY);
  }

  function retain(
    now: Date,
    policy: Partial<RetentionPolicy> = {},
    options: { dryRun?: boolean; store?: RetentionStore } = {},
  ): Promise<RetentionReport> {
    return runRetention({
      store: options.store ?? store,
      blobs,
      policy: { activeMs: DAY, logHotMs: NEVER, logMs: NEVER, securityMs: NEVER, ...policy },
      now,
      dryRun: options.dryRun ?? false,
      logger: silentLogger,
    });
  }

  /** A report of a run that did `changes` and nothing else. */
  function reportOf(now: Date, changes: Partial<RetentionReport> = {}): Omit<RetentionReport, 'runId'> {
    return {
      dryRun: false,
      clock: now.toISOString(),
      archived: 0,
      archiveBytes: 0,
      skipped: 0,
      eventsDeleted: 0,
      horizon: '0',
      logSegmentsMoved: 0,
      logSegmentsDeleted: 0,
      securityRecordsPurged: 0,
      ...changes,
    };
  }

  const withoutRunId = ({ runId: _, ...rest }: RetentionReport): Omit<RetentionReport, 'runId'> => rest;

  /** A finished evaluation with an inline code and output, a container created, metric points (with and without steps). */
  async function finished(evalId: string, output: Buffer = Buffer.from([0x00, 0xff, 0x0a, 0x80, 0x41])): Promise<void> {
    await h.commands.submit({ evalId, code: `print(${JSON.stringify(evalId)})` });
    await h.commands.recordSecurityEvent({
      containerCreated: { evalId, containerId: `${evalId}-ctr`, image: 'python:3.12-slim', limits: { pids: '64' } },
    });
    await h.commands.start({ evalId, containerId: `${evalId}-ctr` });
    await h.commands.recordMetrics({
      evalId,
      metrics: [
        { name: 'loss', value: 0.5, unit: 'nats', step: '0', timestamp: new Date(DAY_ONE) },
        { name: 'loss', value: 0.25, unit: 'nats', step: '1', timestamp: new Date(DAY_ONE + 1) },
        { name: 'accuracy', value: 0.75, unit: '%', timestamp: new Date(DAY_ONE + 2) },
      ],
    });
    await h.commands.complete({ evalId, output, exitCode: 0 });
  }

  function violation(evalId: string, observedBytes = 612345678): Promise<CommandResult> {
    return h.commands.recordSecurityEvent({
      resourceViolation: {
        evalId,
        containerId: `${evalId}-ctr`,
        violationType: ViolationType.VIOLATION_TYPE_MEMORY,
        severity: Severity.SEVERITY_HIGH,
        actionTaken: 'killed',
        details: { observed_bytes: observedBytes },
      },
    });
  }

  /** The evaluation's events as the archive should hold them: as they are in evaluation_events. */
  async function eventsAsArchived(evalId: string): Promise<ArchivedEvent[]> {
    const { rows } = await h.sql.query<{
      position: string;
      revision: string;
      event_type: EvaluationEvent['type'];
      data: EvaluationEvent['data'];
      recorded_at: Date;
      reporter: string | null;
    }>(
      `SELECT position::text, revision::text, event_type, data, recorded_at, reporter
         FROM evaluation_events ev WHERE eval_id = $1 ORDER BY ev.position`,
      [evalId],
    );
    return rows.map((r) => ({
      position: r.position,
      evalId,
      revision: r.revision,
      recordedAt: r.recorded_at.toISOString(),
      event: { type: r.event_type, data: r.data } as EvaluationEvent,
      reporter: r.reporter,
    }));
  }

  /** Inline bodies as [kind, size, hex of the bytes]. */
  async function inlineBodies(evalId: string): Promise<[string, number, string][]> {
    const { rows } = await h.sql.query<{ kind: string; size: string; content: Buffer }>(
      `SELECT kind, size::text, content FROM evaluation_bodies WHERE eval_id = $1 AND content IS NOT NULL ORDER BY kind`,
      [evalId],
    );
    return rows.map((r) => [r.kind, Number(r.size), r.content.toString('hex')]);
  }

  async function metricPoints(evalId: string): Promise<ArchivedMetric[]> {
    const { rows } = await h.sql.query<{
      id: string;
      name: string;
      value: number;
      unit: string;
      step: string | null;
      measured_at: Date;
      recorded_at: Date;
      revision: string;
    }>(
      `SELECT id::text, metric_name AS name, metric_value AS value, unit, step::text, measured_at, recorded_at,
              revision::text
         FROM evaluation_metrics m WHERE eval_id = $1 ORDER BY metric_name, COALESCE(m.step, -1), m.measured_at, m.id`,
      [evalId],
    );
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      value: r.value,
      unit: r.unit,
      ...(r.step !== null ? { step: r.step } : {}),
      measuredAt: r.measured_at,
      recordedAt: r.recorded_at,
      revision: r.revision,
    }));
  }

  /** What PostgreSQL holds of an evaluation that an archive takes. */
  async function hotData(
    evalId: string,
  ): Promise<{ events: ArchivedEvent[]; bodies: [string, number, string][]; metrics: ArchivedMetric[] }> {
    return {
      events: await eventsAsArchived(evalId),
      bodies: await inlineBodies(evalId),
      metrics: await metricPoints(evalId),
    };
  }

  async function objectBytes(key: string): Promise<Buffer | undefined> {
    if ((await blobs.size(key)) === undefined) return undefined;
    const download = await blobs.open(key, new AbortController().signal);
    if (download === 'replaced') throw new Error(`${key} was replaced`);
    const parts: Buffer[] = [];
    for await (const part of download.bytes) parts.push(Buffer.from(part));
    return Buffer.concat(parts);
  }

  /** The evaluation's archive object, its bytes and what they decode to. */
  async function archiveIn(evalId: string): Promise<{ bytes: Buffer; archive: EvaluationArchive }> {
    const bytes = await objectBytes(archiveKey(TENANT, evalId));
    if (bytes === undefined) throw new Error(`no archive of ${evalId}`);
    return { bytes, archive: decodeArchive(bytes) };
  }

  /** The archive's content in the shape of hotData. */
  const contentOf = (
    archive: EvaluationArchive,
  ): { events: ArchivedEvent[]; bodies: [string, number, string][]; metrics: ArchivedMetric[] } => ({
    events: [...archive.events],
    bodies: archive.bodies.map((b) => [b.kind, b.size, b.content.toString('hex')]),
    metrics: [...archive.metrics],
  });

  async function archivedRow(evalId: string): Promise<Record<string, unknown> | undefined> {
    const { rows } = await h.sql.query<Record<string, unknown>>(
      `SELECT tenant_id, archive_key, archived_at, first_position::text, last_position::text, events, bytes::text,
              sha256
         FROM archived_evaluations WHERE eval_id = $1`,
      [evalId],
    );
    return rows[0];
  }

  async function horizon(): Promise<string> {
    const { rows } = await h.sql.query<{ position: string }>(`SELECT position::text FROM event_log_horizon`);
    return rows[0]?.position ?? 'none';
  }

  async function positions(): Promise<string[]> {
    const { rows } = await h.sql.query<{ position: string }>(
      `SELECT position::text FROM evaluation_events ev ORDER BY ev.position`,
    );
    return rows.map((r) => r.position);
  }

  /** Asserts that every position above the horizon, up to the head, is still in the log. */
  async function expectNoHoleAboveHorizon(): Promise<void> {
    const from = Number(await horizon());
    const { rows } = await h.sql.query<{ position: string }>(`SELECT position::text FROM event_log_head`);
    const head = Number(rows[0]?.position);
    const expected = Array.from({ length: head - from }, (_, i) => String(from + 1 + i));
    expect(await positions(), `the log from the horizon ${from} to the head ${head}`).to.deep.equal(expected);
  }

  async function keysUnder(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const entry of blobs.list(prefix)) keys.push(entry.key);
    return keys.sort();
  }

  /** Everything a run may change, to compare before and after. */
  async function world(): Promise<Record<string, unknown>> {
    const counts: Record<string, number> = {};
    for (const table of TABLES) {
      const { rows } = await h.sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
      counts[table] = rows[0]?.n ?? -1;
    }
    const segments = await h.sql.query(
      `SELECT eval_id, stream, start_offset::text, content, s3_key, blob_store FROM evaluation_log_segments s
        ORDER BY eval_id, stream, s.start_offset`,
    );
    const expired = await h.sql.query(`SELECT eval_id, logs_expired_at, updated_at FROM evaluations ORDER BY eval_id`);
    const archived = await h.sql.query(`SELECT * FROM archived_evaluations ORDER BY eval_id`);
    const runs = await h.sql.query(`SELECT * FROM retention_runs ORDER BY run_id`);
    return {
      counts,
      positions: await positions(),
      horizon: await horizon(),
      segments: segments.rows,
      evaluations: expired.rows,
      archived: archived.rows,
      runs: runs.rows,
      objects: await keysUnder(''),
    };
  }

  it('a dry run reports what it would do and changes nothing: rows, objects, horizon, runs', async () => {
    // Left by a run killed before its horizon step: archived, its events still in the log.
    await finished('dry-archived');
    const killed: RetentionStore = {
      ...store,
      advanceHorizon: () => Promise.reject(new Error('killed before the horizon')),
    };
    const killedRun = await rejection(() => retain(clockAfterNow(), {}, { store: killed }));
    expect((killedRun as Error).message).to.equal('killed before the horizon');
    const archivedEvents = (await eventsAsArchived('dry-archived')).length;

    // Due now: an aged evaluation, inline log bytes past both log retentions, security records.
    await finished('dry-aged');
    await h.commands.submit({ evalId: 'dry-logs' });
    await h.commands.start({ evalId: 'dry-logs', containerId: 'dry-logs-ctr' });
    await h.executor.appendLogs({ evalId: 'dry-logs', stream: 'stdout' }, bytesAt(0, 'a line\n'));
    const now = clockAfterNow();
    await h.commands.submit({ evalId: 'dry-young' });

    const before = await world();
    const report = await retain(now, { logHotMs: DAY, logMs: DAY, securityMs: DAY }, { dryRun: true });
    expect(report).to.deep.include({
      runId: 'dry-run',
      dryRun: true,
      clock: now.toISOString(),
      archived: 1,
      skipped: 0,
      // The archived evaluation's events (not dry-aged's: a dry run writes no archive).
      eventsDeleted: archivedEvents,
      horizon: String(archivedEvents),
      logSegmentsMoved: 1,
      logSegmentsDeleted: 1,
      // The two containers created.
      securityRecordsPurged: 2,
    });
    expect(report.archiveBytes).to.be.greaterThan(0);
    expect(await world()).to.deep.equal(before);
    expect(await horizon()).to.equal('0');
    expect(await archivedRow('dry-aged')).to.equal(undefined);
    expect(await keysUnder('archive/')).to.deep.equal([archiveKey(TENANT, 'dry-archived')]);
    const { rows: runs } = await h.sql.query<{ finished_at: Date | null }>(`SELECT finished_at FROM retention_runs`);
    expect(runs, 'only the killed run, which never finished').to.deep.equal([{ finished_at: null }]);
  });

  it('archives an aged terminal evaluation: its events, inline bodies and metric points to S3, out of PostgreSQL', async () => {
    await finished('old');
    // Its output is above the inline limit: in S3 already, where it stays (its row too).
    await h.commands.submit({ evalId: 'old-large' });
    const large = Buffer.alloc(4000, 'z');
    const largeDone = await h.commands.complete({ evalId: 'old-large', output: large, exitCode: 0 });
    await h.commands.submit({ evalId: 'old-running' });
    const running = await h.commands.start({ evalId: 'old-running' });
    const now = clockAfterNow();
    await h.commands.submit({ evalId: 'young' });
    await h.commands.complete({ evalId: 'young', output: Buffer.from('young output'), exitCode: 0 });

    const old = await hotData('old');
    expect(old.bodies.map(([kind]) => kind)).to.deep.equal(['code', 'output']);
    expect(old.bodies[1]?.[2]).to.equal('00ff0a8041');
    expect(old.metrics).to.have.length(3);
    const largeBody = await h.sql.query<{ s3_key: string }>(
      `SELECT s3_key FROM evaluation_bodies WHERE eval_id = 'old-large' AND kind = 'output' AND content IS NULL`,
    );
    const largeKey = largeBody.rows[0]?.s3_key ?? 'none';
    const untouched = { running: await hotData('old-running'), young: await hotData('young') };

    const report = await retain(now);

    const archived = await archiveIn('old');
    const archivedLarge = await archiveIn('old-large');
    expect(withoutRunId(report)).to.deep.equal(
      reportOf(now, {
        archived: 2,
        archiveBytes: archived.bytes.length + archivedLarge.bytes.length,
        // Both are wholly below the first event of one not archived (old-running's submit).
        eventsDeleted: Number(largeDone.position),
        horizon: largeDone.position,
      }),
    );
    expect(archived.archive).to.deep.include({ evalId: 'old', tenant: TENANT });
    expect(archived.archive.row).to.include({ eval_id: 'old', status: 'completed', exit_code: 0 });
    expect(contentOf(archived.archive)).to.deep.equal(old);
    expect(archived.archive.events.map((e) => e.event.type)).to.deep.equal([
      'EvaluationQueued',
      'EvaluationContainerCreated',
      'EvaluationStarted',
      'EvaluationMetricsRecorded',
      'EvaluationCompleted',
    ]);
    expect(await archivedRow('old')).to.deep.equal({
      tenant_id: TENANT,
      archive_key: archiveKey(TENANT, 'old'),
      archived_at: now,
      first_position: old.events[0]?.position,
      last_position: old.events[4]?.position,
      events: 5,
      bytes: String(archived.bytes.length),
      sha256: sha256(archived.bytes),
    });
    expect(await hotData('old'), 'left PostgreSQL').to.deep.equal({ events: [], bodies: [], metrics: [] });
    const { rows: tombstone } = await h.sql.query(
      `SELECT status, revision::text FROM evaluations WHERE eval_id = 'old'`,
    );
    expect(tombstone, 'the evaluation row stays').to.deep.equal([{ status: 'completed', revision: '5' }]);
    const audit = await h.sql.query(`SELECT container_id FROM security_audit WHERE eval_id = 'old'`);
    expect(audit.rows, 'security records follow their own retention').to.deep.equal([{ container_id: 'old-ctr' }]);

    // The large output is no inline body: not in the archive, its row and object where they were.
    expect(archivedLarge.archive.bodies.map((b) => b.kind)).to.deep.equal(['code']);
    expect((await objectBytes(largeKey))?.equals(large)).to.equal(true);
    const largeRow = await h.sql.query(`SELECT kind FROM evaluation_bodies WHERE eval_id = 'old-large' ORDER BY kind`);
    expect(largeRow.rows).to.deep.equal([{ kind: 'output' }]);

    // A running evaluation, however old, and a young one are left as they were.
    expect(await hotData('old-running')).to.deep.equal(untouched.running);
    expect(await hotData('young')).to.deep.equal(untouched.young);
    expect(untouched.running.events[0]?.position).to.equal(String(Number(largeDone.position) + 1));
    expect(untouched.running.events[1]?.position).to.equal(running.position);
    expect(await keysUnder('archive/')).to.deep.equal(
      [archiveKey(TENANT, 'old'), archiveKey(TENANT, 'old-large')].sort(),
    );
    await expectNoHoleAboveHorizon();

    const { rows: runs } = await h.sql.query<Record<string, unknown>>(
      `SELECT run_id::text, clock, dry_run, report, finished_at IS NOT NULL AS finished FROM retention_runs`,
    );
    expect(runs).to.deep.equal([
      { run_id: report.runId, clock: now, dry_run: false, report: { ...report }, finished: true },
    ]);
  });

  it("moves the horizon only over whole archived evaluations below every other evaluation's first event", async () => {
    await h.commands.submit({ evalId: 'a-1' });
    await h.commands.submit({ evalId: 'live' });
    await h.commands.cancel({ evalId: 'a-1' });
    // Wholly above the live evaluation's first event.
    await h.commands.submit({ evalId: 'a-2' });
    const a2Done = await h.commands.cancel({ evalId: 'a-2' });
    const now = clockAfterNow();
    const a1Events = await eventsAsArchived('a-1');
    const a2Events = await eventsAsArchived('a-2');

    const first = await retain(now);
    // a-1 began below live's submit and ended above it: the horizon waits below a-1.
    expect(withoutRunId(first)).to.deep.include({ archived: 2, eventsDeleted: 0, horizon: '0' });
    expect(await positions()).to.deep.equal(['1', '2', '3', '4', '5']);
    expect(await archivedRow('a-2')).to.deep.include({ last_position: a2Done.position, events: 2 });
    expect((await archiveIn('a-1')).archive.events).to.deep.equal(a1Events);
    expect((await archiveIn('a-2')).archive.events).to.deep.equal(a2Events);

    // Once the live evaluation is archived too, a later run takes them all.
    await h.commands.cancel({ evalId: 'live' });
    const later = clockAfterNow();
    const second = await retain(later);
    expect(withoutRunId(second)).to.deep.include({ archived: 1, eventsDeleted: 6, horizon: '6' });
    expect(await positions()).to.deep.equal([]);
    expect(await horizon()).to.equal('6');
    // The log goes on from its head: no position is used twice.
    expect((await h.commands.submit({ evalId: 'after' })).position).to.equal('7');
    await expectNoHoleAboveHorizon();
  });

  it('refuses a command on an evaluation whose events left the log with its archive: FAILED_PRECONDITION, not NOT_FOUND', async () => {
    await h.commands.submit({ evalId: 'gone' });
    await h.commands.cancel({ evalId: 'gone' });
    const report = await retain(clockAfterNow());
    expect(withoutRunId(report)).to.deep.include({ archived: 1, eventsDeleted: 2 });
    const refused = await rejection(() =>
      h.commands.recordSecurityEvent({
        resourceViolation: { evalId: 'gone', containerId: 'gone-ctr', violationType: ViolationType.VIOLATION_TYPE_CPU },
      }),
    );
    expect(refused).to.be.instanceOf(FailedPreconditionError).and.include({ reason: 'EVALUATION_ARCHIVED' });
    expect((refused as Error).message).to.match(/^evaluation gone was archived at .+ and takes no more commands$/);
    // An id nobody has is still NOT_FOUND, and the archived id is not free for a new submit.
    expect(await rejection(() => h.commands.start({ evalId: 'never' }))).to.be.instanceOf(NotFoundError);
    expect(await rejection(() => h.commands.submit({ evalId: 'gone' }))).to.be.instanceOf(AlreadyExistsError);
  });

  it('is idempotent: a second run with the same clock archives and deletes nothing, and leaves the objects', async () => {
    await finished('idem-1');
    await h.commands.submit({ evalId: 'idem-live' });
    // At positions 7 to 11: its archive orders them as numbers, not as text ('10' before '7').
    await finished('idem-2');
    const now = clockAfterNow();
    const first = await retain(now);
    expect(withoutRunId(first)).to.deep.include({ archived: 2, eventsDeleted: 5, horizon: '5' });
    const before = await world();
    const objects = [await archiveIn('idem-1'), await archiveIn('idem-2')].map((a) => a.bytes.toString('hex'));

    const second = await retain(now);
    expect(withoutRunId(second)).to.deep.equal(reportOf(now, { horizon: '5' }));
    const after = await world();
    const { runs: runsAfter, counts: countsAfter, ...restAfter } = after;
    const { runs: runsBefore, counts: countsBefore, ...restBefore } = before;
    expect(restAfter).to.deep.equal(restBefore);
    expect(countsAfter).to.deep.equal({ ...(countsBefore as object), retention_runs: 2 });
    expect((runsAfter as unknown[]).slice(0, 1)).to.deep.equal(runsBefore);
    expect([await archiveIn('idem-1'), await archiveIn('idem-2')].map((a) => a.bytes.toString('hex'))).to.deep.equal(
      objects,
    );
  });

  it('resumes a run killed between the upload and its record: archived once, nothing lost', async () => {
    await finished('resume');
    const hot = await hotData('resume');
    let kills = 1;
    const killed: RetentionStore = {
      ...store,
      recordArchive: (entry) =>
        kills-- > 0 ? Promise.reject(new Error('killed after the upload')) : store.recordArchive(entry),
    };
    const now = clockAfterNow();
    expect(((await rejection(() => retain(now, {}, { store: killed }))) as Error).message).to.equal(
      'killed after the upload',
    );
    // The object is there, nothing else changed.
    expect(contentOf((await archiveIn('resume')).archive)).to.deep.equal(hot);
    expect(await archivedRow('resume')).to.equal(undefined);
    expect(await hotData('resume')).to.deep.equal(hot);
    expect(await horizon()).to.equal('0');

    const resumed = await retain(now, {}, { store: killed });
    const { bytes, archive } = await archiveIn('resume');
    expect(withoutRunId(resumed)).to.deep.equal(
      reportOf(now, { archived: 1, archiveBytes: bytes.length, eventsDeleted: 5, horizon: '5' }),
    );
    expect(contentOf(archive)).to.deep.equal(hot);
    const { rows } = await h.sql.query<{ n: number; sha256: string }>(
      `SELECT count(*)::int AS n, min(sha256) AS sha256 FROM archived_evaluations WHERE eval_id = 'resume'`,
    );
    expect(rows[0]).to.deep.equal({ n: 1, sha256: sha256(bytes) });
    expect(withoutRunId(await retain(now))).to.deep.equal(reportOf(now, { horizon: '5' }));
  });

  it('leaves an evaluation written to while its archive was made for the next run, which archives the write too', async () => {
    await finished('racer');
    const hot = await hotData('racer');
    let raced: CommandResult | undefined;
    const racing: RetentionStore = {
      ...store,
      async archiveOf(ref) {
        const content = await store.archiveOf(ref);
        raced ??= await violation(ref.evalId);
        return content;
      },
    };
    const now = clockAfterNow();
    const report = await retain(now, {}, { store: racing });
    expect(withoutRunId(report)).to.deep.equal(reportOf(now, { skipped: 1 }));
    expect(raced?.position).to.equal('6');
    expect(await archivedRow('racer')).to.equal(undefined);
    const withWrite = await hotData('racer');
    expect(withWrite.bodies, 'nothing deleted').to.deep.equal(hot.bodies);
    expect(withWrite.metrics).to.deep.equal(hot.metrics);
    expect(withWrite.events.slice(0, 5)).to.deep.equal(hot.events);
    expect(withWrite.events.map((e) => e.event.type)[5]).to.equal('EvaluationSecurityViolation');
    expect(await horizon()).to.equal('0');

    // The write made it young again: a run a day after it archives it, the write with it.
    const later = clockAfterNow();
    const next = await retain(later);
    expect(withoutRunId(next)).to.deep.include({ archived: 1, skipped: 0, eventsDeleted: 6, horizon: '6' });
    const { bytes, archive } = await archiveIn('racer');
    expect(contentOf(archive)).to.deep.equal(withWrite);
    expect(await archivedRow('racer')).to.deep.include({ last_position: '6', events: 6, sha256: sha256(bytes) });
  });

  it('refuses every write to an archived evaluation, its events still in the log or not: its archive holds them all', async () => {
    // A live evaluation's first event keeps the horizon below the archived one's events.
    await h.commands.submit({ evalId: 'sealed-live' });
    await finished('sealed');
    const hot = await hotData('sealed');
    const now = clockAfterNow();
    expect(withoutRunId(await retain(now))).to.deep.include({ archived: 1, eventsDeleted: 0, horizon: '0' });
    const refused = await rejection(() => violation('sealed'));
    expect(refused).to.be.instanceOf(FailedPreconditionError).and.include({ reason: 'EVALUATION_ARCHIVED' });
    expect(
      (await eventsAsArchived('sealed')).map((e) => e.position),
      'nothing appended',
    ).to.deep.equal(hot.events.map((e) => e.position));
    const { archive } = await archiveIn('sealed');
    expect(archive.events).to.deep.equal(hot.events);
    expect(withoutRunId(await retain(now)), 'and nothing more to do').to.deep.equal(reportOf(now));
  });

  it('never splits an archived evaluation with the horizon: one interleaved with a live one keeps every event', async () => {
    const gone = await h.commands.submit({ evalId: 'whole-1' });
    await h.commands.cancel({ evalId: 'whole-1' });
    const straddling = await h.commands.submit({ evalId: 'straddling' });
    const live = await h.commands.submit({ evalId: 'later-live' });
    await h.commands.cancel({ evalId: 'straddling' });
    expect([gone.position, straddling.position, live.position]).to.deep.equal(['1', '3', '4']);
    const straddlingEvents = await eventsAsArchived('straddling');

    const now = clockAfterNow();
    const first = await retain(now);
    // The walk stops below later-live's submit (4); straddling began at 3 and ends at 5: below 3.
    expect(withoutRunId(first)).to.deep.include({ archived: 2, eventsDeleted: 2, horizon: '2' });
    expect(await positions()).to.deep.equal(['3', '4', '5']);
    expect(await eventsAsArchived('straddling'), 'all of it, or none').to.deep.equal(straddlingEvents);
    await expectNoHoleAboveHorizon();

    await h.commands.cancel({ evalId: 'later-live' });
    const later = clockAfterNow();
    expect(withoutRunId(await retain(later))).to.deep.include({ archived: 1, eventsDeleted: 4, horizon: '6' });
    expect(await positions()).to.deep.equal([]);
  });

  it('walks past its step to the end of an archived evaluation longer than the step, instead of stopping below it for good', async () => {
    await h.commands.submit({ evalId: 'long' });
    await h.commands.submit({ evalId: 'short' });
    await h.commands.cancel({ evalId: 'short' });
    await h.commands.cancel({ evalId: 'long' });
    // Archived, the horizon left where it is.
    const archiveOnly: RetentionStore = {
      ...store,
      advanceHorizon: () => Promise.resolve({ from: '0', to: '0', events: 0 }),
    };
    expect(withoutRunId(await retain(clockAfterNow(), {}, { store: archiveOnly }))).to.deep.include({ archived: 2 });
    // A step of 2 ends inside 'long' (1 to 4): it walks on to 4 rather than back to 0.
    expect(await store.advanceHorizon(2, false)).to.deep.equal({ from: '0', to: '4', events: 4 });
    expect(await positions()).to.deep.equal([]);
    expect(await horizon()).to.equal('4');
  });

  it('lets only retention delete: archived events at or below the horizon, security records past the purge line', async () => {
    await h.commands.submit({ evalId: 'trig-live' });
    await finished('trig');
    const recorded = await violation('trig-live');
    expect(withoutRunId(await retain(clockAfterNow()))).to.deep.include({ archived: 1, horizon: '0' });
    const message = async (statement: string, client: Client = h.sql): Promise<string> =>
      ((await rejection(() => client.query(statement))) as Error).message;
    async function rolledBack<T>(work: () => Promise<T>): Promise<T> {
      await h.sql.query('BEGIN');
      try {
        return await work();
      } finally {
        await h.sql.query('ROLLBACK');
      }
    }

    // An archived event above the horizon.
    expect(await message(`DELETE FROM evaluation_events WHERE position = 2`)).to.match(
      /^evaluation_events is append-only: only archived events at or below the horizon leave it \(position 2 refused\)/,
    );
    // At or below the horizon, but not archived; and all of them.
    const unarchived = await rolledBack(async () => {
      await h.sql.query(`UPDATE event_log_horizon SET position = 7`);
      return message(`DELETE FROM evaluation_events WHERE position = 1`);
    });
    expect(unarchived).to.include('append-only').and.include('position 1 refused');
    expect(await message(`DELETE FROM evaluation_events`)).to.include('append-only');
    // What retention does passes: an archived event at or below the horizon.
    const deleted = await rolledBack(async () => {
      await h.sql.query(`UPDATE event_log_horizon SET position = 7`);
      return (await h.sql.query(`DELETE FROM evaluation_events WHERE position = 2`)).rowCount;
    });
    expect(deleted).to.equal(1);
    expect(await message(`UPDATE evaluation_events SET request_id = 'forged' WHERE position = 2`)).to.equal(
      'evaluation_events is append-only (UPDATE refused)',
    );
    expect(await message(`TRUNCATE evaluation_events`)).to.equal('evaluation_events is append-only (TRUNCATE refused)');

    for (const table of ['security_events', 'security_audit']) {
      expect(await message(`DELETE FROM ${table}`)).to.include(`${table} is append-only`);
      const early = await rolledBack(async () => {
        await h.sql.query(`SELECT set_config('crucible.security_purge_before', $1, true)`, [
          new Date(DAY_ONE).toISOString(),
        ]);
        return message(`DELETE FROM ${table}`);
      });
      expect(early, 'records after the purge line').to.include(`${table} is append-only`);
      const purged = await rolledBack(async () => {
        await h.sql.query(`SELECT set_config('crucible.security_purge_before', $1, true)`, [
          new Date(DAY_ONE + DAY).toISOString(),
        ]);
        return (await h.sql.query(`DELETE FROM ${table}`)).rowCount;
      });
      expect(purged, `${table}: records before the purge line`).to.equal(1);
      expect(await message(`UPDATE ${table} SET container_id = 'forged'`)).to.equal(
        `${table} is append-only (UPDATE refused)`,
      );
      expect(await message(`TRUNCATE ${table}`)).to.equal(`${table} is append-only (TRUNCATE refused)`);
    }

    // The command service's own login deletes nothing at all.
    const service = new Client({ connectionString: h.env.env.DATABASE_URL });
    await service.connect();
    try {
      for (const table of ['evaluation_events', 'security_events', 'archived_evaluations'])
        expect(await message(`DELETE FROM ${table}`, service), table).to.match(/^permission denied/);
      expect(await message(`UPDATE event_log_horizon SET position = 7`, service)).to.match(/^permission denied/);
    } finally {
      await service.end();
    }

    expect(await positions()).to.deep.equal(['1', '2', '3', '4', '5', '6', '7']);
    const { rows } = await h.sql.query(`SELECT position::text FROM security_events`);
    expect(rows).to.deep.equal([{ position: recorded.position }]);
    expect(await horizon()).to.equal('0');
  });

  it('moves inline log bytes past LOG_HOT_RETENTION to S3 and deletes logs past LOG_RETENTION, objects too', async () => {
    const segments = async (evalId: string): Promise<Record<string, unknown>[]> =>
      (
        await h.sql.query<Record<string, unknown>>(
          `SELECT stream, start_offset::text AS start, content, s3_key, blob_store FROM evaluation_log_segments
            WHERE eval_id = $1 ORDER BY stream, start_offset`,
          [evalId],
        )
      ).rows;
    const expiredAt = async (evalId: string): Promise<Date | null | undefined> =>
      (
        await h.sql.query<{ logs_expired_at: Date | null }>(
          `SELECT logs_expired_at FROM evaluations WHERE eval_id = $1`,
          [evalId],
        )
      ).rows[0]?.logs_expired_at;
    for (const evalId of ['logs-old', 'logs-mid', 'logs-new']) {
      await h.commands.submit({ evalId });
      await h.commands.start({ evalId });
    }
    await h.executor.appendLogs({ evalId: 'logs-old', stream: 'stdout' }, bytesAt(0, 'old line\n'));
    const largeOld = Buffer.alloc(5000, 'e');
    await h.executor.appendLogs({ evalId: 'logs-old', stream: 'stderr' }, bytesAt(0, largeOld));
    const expiredLine = h.clock.now();
    await h.executor.appendLogs({ evalId: 'logs-mid', stream: 'stdout' }, bytesAt(0, 'mid line\n'));
    await h.executor.appendLogs({ evalId: 'logs-mid', stream: 'stdout' }, bytesAt(9, Buffer.from([0x00, 0xfe])));
    const hotLine = h.clock.now();
    await h.executor.appendLogs({ evalId: 'logs-new', stream: 'stdout' }, bytesAt(0, 'new line\n'));
    const now = h.clock.now();

    const [oldStderr, oldStdout] = await segments('logs-old');
    const oldStderrKey = String(oldStderr?.s3_key);
    expect(oldStdout?.content).to.deep.equal(Buffer.from('old line\n'));
    expect((await objectBytes(oldStderrKey))?.equals(largeOld)).to.equal(true);
    const newBefore = await segments('logs-new');
    const objectsBefore = await keysUnder('');
    const events = (await positions()).length;

    const report = await retain(now, {
      activeMs: NEVER,
      logHotMs: now.getTime() - hotLine.getTime(),
      logMs: now.getTime() - expiredLine.getTime(),
    });
    // logs-old's inline segment went to S3 on its way out.
    expect(withoutRunId(report)).to.deep.equal(reportOf(now, { logSegmentsMoved: 3, logSegmentsDeleted: 2 }));

    expect(await segments('logs-old')).to.deep.equal([]);
    expect(await expiredAt('logs-old')).to.deep.equal(now);
    expect(await objectBytes(oldStderrKey), 'its S3 object deleted').to.equal(undefined);

    const mid = await segments('logs-mid');
    expect(mid.map((s) => [s.stream, s.start, s.content, s.blob_store])).to.deep.equal([
      ['stdout', '0', null, 's3'],
      ['stdout', '9', null, 's3'],
    ]);
    expect((await objectBytes(String(mid[0]?.s3_key)))?.toString('hex')).to.equal(
      Buffer.from('mid line\n').toString('hex'),
    );
    expect((await objectBytes(String(mid[1]?.s3_key)))?.toString('hex')).to.equal('00fe');
    expect(await expiredAt('logs-mid')).to.equal(null);

    expect(await segments('logs-new')).to.deep.equal(newBefore);
    expect(await expiredAt('logs-new')).to.equal(null);
    // Only the mid segments' objects were added; logs-old's (the one moved on its way out too) are gone.
    expect(await keysUnder('')).to.deep.equal(
      [...objectsBefore.filter((k) => k !== oldStderrKey), String(mid[0]?.s3_key), String(mid[1]?.s3_key)].sort(),
    );
    expect((await positions()).length, 'the events stay').to.equal(events);
  });

  it('purges security records recorded before SECURITY_RETENTION from both tables, and keeps the rest', async () => {
    const records = async (table: string): Promise<string[]> =>
      (await h.sql.query<{ position: string }>(`SELECT position::text FROM ${table} t ORDER BY t.position`)).rows.map(
        (r) => r.position,
      );
    await h.commands.submit({ evalId: 'sec-1' });
    const oldAudit = await h.commands.recordSecurityEvent({
      containerCreated: { evalId: 'sec-1', containerId: 'sec-1-ctr', image: 'python:3.12-slim' },
    });
    const oldViolations = [await violation('sec-1', 1), await violation('sec-1', 2)];
    const purgeLine = h.clock.now();
    await h.commands.submit({ evalId: 'sec-2' });
    const newAudit = await h.commands.recordSecurityEvent({
      containerCreated: { evalId: 'sec-2', containerId: 'sec-2-ctr', image: 'python:3.12-slim' },
    });
    // Reported as having happened before the line: the line is the service's time of record.
    const lateReport = await h.commands.recordSecurityEvent({
      resourceViolation: { evalId: 'sec-1', containerId: 'sec-1-ctr', violationType: ViolationType.VIOLATION_TYPE_CPU },
      occurredAt: new Date(DAY_ONE),
    });
    const now = h.clock.now();
    expect(await records('security_audit')).to.deep.equal([oldAudit.position, newAudit.position]);
    expect(await records('security_events')).to.deep.equal([
      ...oldViolations.map((v) => v.position),
      lateReport.position,
    ]);
    const events = await positions();

    const report = await retain(now, { activeMs: NEVER, securityMs: now.getTime() - purgeLine.getTime() });
    expect(withoutRunId(report)).to.deep.equal(reportOf(now, { securityRecordsPurged: 3 }));
    expect(await records('security_audit')).to.deep.equal([newAudit.position]);
    expect(await records('security_events')).to.deep.equal([lateReport.position]);
    expect(await positions(), 'their events stay in the log').to.deep.equal(events);

    expect(
      withoutRunId(await retain(now, { activeMs: NEVER, securityMs: now.getTime() - purgeLine.getTime() })),
    ).to.deep.equal(reportOf(now));
  });

  it('runs exclusively: another session holding the retention lock means no run, without calling the work', async () => {
    let calls = 0;
    const work = (): Promise<string> => {
      calls += 1;
      return Promise.resolve('ran');
    };
    await h.sql.query(`SELECT pg_advisory_lock(hashtext('crucible-retention'))`);
    try {
      expect(await store.exclusively(work)).to.equal(undefined);
      expect(calls).to.equal(0);
    } finally {
      await h.sql.query(`SELECT pg_advisory_unlock(hashtext('crucible-retention'))`);
    }
    // Free again; and a run in progress holds it against another instance.
    const nested = await store.exclusively(async () => [await work(), await store.exclusively(work)]);
    expect(nested).to.deep.equal(['ran', undefined]);
    expect(calls).to.equal(1);
    expect(await store.exclusively(work)).to.equal('ran');
    const { rows } = await h.sql.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database
        WHERE l.locktype = 'advisory' AND d.datname = current_database()`,
    );
    expect(rows[0]?.n, 'released after each run').to.equal(0);
  });
});
