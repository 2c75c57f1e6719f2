import { expect } from 'chai';
import { NotFoundError, ValidationError } from '../../../shared/errors';
import { Severity, ViolationType } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { createHarness, denseLog, eventsOf, rejection, type Harness } from './harness';

/** The harness's clock: 2025-01-01T00:00:00Z plus one second per reading. */
const DAY_ONE = Date.UTC(2025, 0, 1);

const violationsOf = (err: unknown): string[][] => (err as ValidationError).violations.map((v) => [v.field, v.rule]);

describe('command executor: RecordSecurityEvent in PostgreSQL', function () {
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    await h.close();
  });

  afterEach(async () => {
    const log = await denseLog(h.sql);
    expect(log.problems, 'event log stays dense').to.deep.equal([]);
  });

  it("keeps a container created in security_audit, at its event's position, and a violation in security_events", async () => {
    await h.commands.submit({ evalId: 's-1' });
    const created = await h.commands.recordSecurityEvent({
      containerCreated: {
        evalId: 's-1',
        containerId: 'ctr-1',
        image: 'python:3.12-slim',
        limits: {
          cpuCores: 0.5,
          memoryBytes: '536870912',
          pids: '64',
          network: 'none',
          diskBytes: '0',
          timeoutSeconds: 30,
        },
      },
      occurredAt: new Date(DAY_ONE),
      requestId: 's-1-created',
    });
    await h.commands.start({ evalId: 's-1', containerId: 'ctr-1' });
    const violation = await h.commands.recordSecurityEvent({
      resourceViolation: {
        evalId: 's-1',
        containerId: 'ctr-1',
        violationType: ViolationType.VIOLATION_TYPE_MEMORY,
        details: { observed_bytes: 612345678, limit_bytes: 536870912 },
        actionTaken: 'killed',
        severity: Severity.SEVERITY_HIGH,
      },
    });
    expect([created.revision, violation.revision]).to.deep.equal(['2', '4']);
    expect((await eventsOf(h.sql, 's-1')).map((e) => e.event_type)).to.deep.equal([
      'EvaluationQueued',
      'EvaluationContainerCreated',
      'EvaluationStarted',
      'EvaluationSecurityViolation',
    ]);
    const audit = await h.sql.query(
      `SELECT eval_id, container_id, event_type, image, limits, occurred_at, revision::text, position::text
         FROM security_audit WHERE eval_id = 's-1'`,
    );
    expect(audit.rows).to.deep.equal([
      {
        eval_id: 's-1',
        container_id: 'ctr-1',
        event_type: 'container_created',
        image: 'python:3.12-slim',
        limits: { cpuCores: 0.5, memoryBytes: '536870912', pids: '64', network: 'none', timeoutSeconds: 30 },
        occurred_at: new Date(DAY_ONE),
        revision: '2',
        position: created.position,
      },
    ]);
    const events = await h.sql.query(
      `SELECT container_id, violation_type, severity, action_taken, details, revision::text, position::text
         FROM security_events WHERE eval_id = 's-1'`,
    );
    expect(events.rows).to.deep.equal([
      {
        container_id: 'ctr-1',
        violation_type: 'memory',
        severity: 'high',
        action_taken: 'killed',
        details: { observed_bytes: 612345678, limit_bytes: 536870912 },
        revision: '4',
        position: violation.position,
      },
    ]);
  });

  it('takes security events in any status, and a repeat with the same request id once', async () => {
    await h.commands.submit({ evalId: 's-2' });
    await h.commands.fail({ evalId: 's-2', error: 'killed' });
    const report = {
      resourceViolation: {
        evalId: 's-2',
        containerId: 'ctr-2',
        violationType: ViolationType.VIOLATION_TYPE_TIMEOUT,
      },
      requestId: 's-2-timeout',
    };
    const first = await h.commands.recordSecurityEvent(report);
    expect(await h.commands.recordSecurityEvent(report)).to.deep.equal(first);
    const { rows } = await h.sql.query<{ n: number; severity: string }>(
      `SELECT count(*)::int AS n, min(severity) AS severity FROM security_events WHERE eval_id = 's-2'`,
    );
    expect(rows[0]).to.deep.equal({ n: 1, severity: 'medium' });
  });

  it('refuses a report without a kind, bad fields by name, and an unknown evaluation, writing nothing', async () => {
    await h.commands.submit({ evalId: 's-3' });
    expect(violationsOf(await rejection(() => h.commands.recordSecurityEvent({})))).to.deep.equal([
      ['event', 'REQUIRED'],
    ]);
    const bad = await rejection(() =>
      h.commands.recordSecurityEvent({
        resourceViolation: {
          evalId: 's-3',
          containerId: '',
          violationType: ViolationType.VIOLATION_TYPE_UNSPECIFIED,
          details: { blob: 'x'.repeat(17 * 1024) },
          actionTaken: '',
          severity: Severity.SEVERITY_UNSPECIFIED,
        },
      }),
    );
    expect(violationsOf(bad)).to.deep.equal([
      ['resource_violation.container_id', 'REQUIRED'],
      ['resource_violation.violation_type', 'REQUIRED'],
      ['resource_violation.details', 'TOO_LARGE'],
    ]);
    const limits = await rejection(() =>
      h.commands.recordSecurityEvent({
        containerCreated: { evalId: 's-3', containerId: 'c', image: '', limits: { cpuCores: -1, pids: '-2' } },
      }),
    );
    expect(violationsOf(limits)).to.deep.equal([
      ['container_created.image', 'REQUIRED'],
      ['container_created.limits.cpu_cores', 'NOT_NEGATIVE'],
      ['container_created.limits.pids', 'NOT_NEGATIVE'],
    ]);
    const unknown = await rejection(() =>
      h.commands.recordSecurityEvent({
        resourceViolation: { evalId: 's-nobody', containerId: 'c', violationType: ViolationType.VIOLATION_TYPE_CPU },
      }),
    );
    expect(unknown).to.be.instanceOf(NotFoundError);
    const future = await rejection(() =>
      h.commands.recordSecurityEvent({
        resourceViolation: { evalId: 's-3', containerId: 'c', violationType: ViolationType.VIOLATION_TYPE_CPU },
        occurredAt: new Date(DAY_ONE + 90 * 86_400_000),
      }),
    );
    expect(violationsOf(future)).to.deep.equal([['occurred_at', 'OUT_OF_RANGE']]);
    expect((await eventsOf(h.sql, 's-3')).map((e) => e.event_type)).to.deep.equal(['EvaluationQueued']);
  });

  it('is append-only in PostgreSQL itself: UPDATE, DELETE and TRUNCATE of either table fail', async () => {
    for (const table of ['security_audit', 'security_events']) {
      for (const statement of [
        `UPDATE ${table} SET container_id = 'forged'`,
        `DELETE FROM ${table}`,
        `TRUNCATE ${table}`,
      ]) {
        const err = await rejection(() => h.sql.query(statement));
        // A DELETE is refused row by row (only records past SECURITY_RETENTION may go: retention.test.ts).
        expect((err as Error).message, statement).to.match(
          statement.startsWith('DELETE')
            ? new RegExp(`^${table} is append-only: only records past SECURITY_RETENTION are purged`)
            : new RegExp(`^${table} is append-only \\(${statement.split(' ')[0]} refused\\)$`),
        );
      }
    }
    const { rows } = await h.sql.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM security_audit)::int + (SELECT count(*) FROM security_events)::int AS n`,
    );
    expect(rows[0]?.n).to.be.greaterThan(0);
  });
});
