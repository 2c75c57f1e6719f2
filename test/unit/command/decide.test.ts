import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { announcedLogsAppended, encodeChange } from '../../../shared/changes';
import { STATUSES, type BodyRef, type Status } from '../../../shared/domain';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  IllegalTransitionError,
  NotFoundError,
  PermissionDeniedError,
  RevisionConflictError,
  ValidationError,
} from '../../../shared/errors';
import {
  commandHash,
  decideChange,
  type AppendLogSegment,
  type MoveBlob,
  decideSubmit,
  type Decision,
  type DecisionContext,
  type EvaluationCommand,
  type RecordMetrics,
  type RecordSecurityEvent,
  type EvaluationSnapshot,
  type LoggedCommand,
  type SubmitEvaluation,
} from '../../../services/command/domain';

import type { Caller, Role } from '../../../shared/auth';

const NOW = new Date('2025-01-02T03:04:05.678Z');
const BODY: BodyRef = { previewBase64: Buffer.from('out').toString('base64'), size: 3, location: 'postgres' };

const METRIC_RULES = { maxMetricNames: 3, metricsAfterTerminalMs: 60_000 };

function ctxFor(command: Parameters<typeof commandHash>[0], body: BodyRef | 'no body' = BODY): DecisionContext {
  return {
    now: NOW,
    commandHash: commandHash(command),
    metricRules: METRIC_RULES,
    logRules: { logsAfterTerminalMs: 60_000 },
    ...(body !== 'no body' ? { body } : {}),
  };
}

/** The commands that move an evaluation through its statuses. */
type LifecycleCommand = Exclude<EvaluationCommand, RecordMetrics | RecordSecurityEvent | AppendLogSegment | MoveBlob>;

function logged(revision: string, position: string, hash: string, evalId = 'e1'): LoggedCommand {
  return { evalId, revision, position, commandHash: hash };
}

function snapshot(status: Status, revision = '2', latestHash = 'f'.repeat(64)): EvaluationSnapshot {
  return {
    evalId: 'e1',
    status,
    revision,
    submitted: logged('1', '10', 'a'.repeat(64)),
    latest: logged(revision, '20', latestHash),
    createdAt: new Date(NOW.getTime() - 60_000),
    metricNames: [],
    logBytes: { stdout: 0, stderr: 0 },
  };
}

const SUBMIT: SubmitEvaluation = {
  type: 'SubmitEvaluation',
  evalId: 'e1',
  code: 'print("héllo")',
  language: 'python',
  engine: 'docker',
  timeoutSeconds: 30,
  metadata: { team: 'a' },
};

const COMMANDS = {
  StartEvaluation: { type: 'StartEvaluation', evalId: 'e1', executorId: 'x1', containerId: 'c1' },
  CompleteEvaluation: { type: 'CompleteEvaluation', evalId: 'e1', output: Buffer.from('out'), exitCode: 0 },
  FailEvaluation: { type: 'FailEvaluation', evalId: 'e1', error: 'boom', exitCode: 2, reason: 'timeout' },
  CancelEvaluation: { type: 'CancelEvaluation', evalId: 'e1', reason: 'user' },
} satisfies { [K in LifecycleCommand['type']]: Extract<EvaluationCommand, { type: K }> };

const TARGET: Record<LifecycleCommand['type'], Status> = {
  StartEvaluation: 'running',
  CompleteEvaluation: 'completed',
  FailEvaluation: 'failed',
  CancelEvaluation: 'cancelled',
};

const ALLOWED: Record<Status, readonly Status[]> = {
  queued: ['running', 'completed', 'failed', 'cancelled'],
  running: ['completed', 'failed', 'cancelled'],
  completed: [],
  failed: [],
  cancelled: [],
};

function appended(decision: Decision): Extract<Decision, { kind: 'append' }> {
  if (decision.kind !== 'append') expect.fail(`expected an append, got ${JSON.stringify(decision)}`);
  return decision;
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return expect.fail('expected an error');
}

describe('decide', () => {
  describe('decideSubmit', () => {
    it("queues a new evaluation at revision 1 with the facts of the code, in the submitter's tenant", () => {
      const decision = appended(
        decideSubmit(SUBMIT, 'e1', undefined, undefined, { ...ctxFor(SUBMIT), tenant: 'acme' }),
      );
      const code = Buffer.from(SUBMIT.code, 'utf8');
      expect(decision).to.deep.include({ evalId: 'e1', fromRevision: '0', toRevision: '1', status: 'queued' });
      expect(decision.event).to.deep.equal({
        type: 'EvaluationQueued',
        data: {
          codeHash: createHash('sha256').update(code).digest('hex'),
          codeSize: code.length,
          language: 'python',
          engine: 'docker',
          timeoutSeconds: 30,
          tenantId: 'acme',
          metadata: { team: 'a' },
          createdAt: NOW.toISOString(),
        },
      });
      expect(code.length, 'code_size counts bytes, not characters').to.equal(SUBMIT.code.length + 1);
    });

    it('uses the id it is given (the server-assigned one when the request had none)', () => {
      const { evalId: _omitted, ...anonymous } = SUBMIT;
      const decision = appended(decideSubmit(anonymous, '01JASSIGNED', undefined, undefined, ctxFor(anonymous)));
      expect(decision.evalId).to.equal('01JASSIGNED');
    });

    it('accepts expected_revision 0 and refuses any other with the current revision 0', () => {
      const zero = { ...SUBMIT, expectedRevision: '0' };
      expect(appended(decideSubmit(zero, 'e1', undefined, undefined, ctxFor(zero))).toRevision).to.equal('1');
      const five = { ...SUBMIT, expectedRevision: '5' };
      const err = thrown(() => decideSubmit(five, 'e1', undefined, undefined, ctxFor(five)));
      expect(err).to.be.instanceOf(RevisionConflictError);
      expect(err).to.include({ expected: '5', current: '0' });
    });

    it('refuses the same eval_id with different code (AlreadyExists)', () => {
      const other = { ...SUBMIT, code: 'print(2)' };
      const existing = { ...snapshot('queued', '1'), submitted: logged('1', '10', commandHash(SUBMIT)) };
      expect(() => decideSubmit(other, 'e1', existing, undefined, ctxFor(other))).to.throw(AlreadyExistsError, /e1/);
    });

    it('answers a late retry of the original submit with the original answer, whatever happened since', () => {
      for (const status of STATUSES) {
        const existing = { ...snapshot(status, '3'), submitted: logged('1', '10', commandHash(SUBMIT)) };
        const decision = decideSubmit(SUBMIT, 'e1', existing, undefined, ctxFor(SUBMIT));
        expect(decision, status).to.deep.equal({
          kind: 'unchanged',
          result: { evalId: 'e1', revision: '1', position: '10' },
        });
      }
    });

    it('answers a repeated request_id with the original answer', () => {
      const withRequest = { ...SUBMIT, requestId: 'r1' };
      const prior = logged('1', '10', commandHash(withRequest));
      const decision = decideSubmit(withRequest, 'e1', snapshot('running', '2'), prior, ctxFor(withRequest));
      expect(decision).to.deep.equal({ kind: 'unchanged', result: { evalId: 'e1', revision: '1', position: '10' } });
    });

    it('answers a repeated request_id without eval_id with the first assigned id, not the fresh one', () => {
      const { evalId: _omitted, ...anonymous } = { ...SUBMIT, requestId: 'r1' };
      const prior = logged('1', '10', commandHash(anonymous), '01JFIRST');
      const decision = decideSubmit(anonymous, '01JSECOND', undefined, prior, ctxFor(anonymous));
      expect(decision).to.deep.equal({
        kind: 'unchanged',
        result: { evalId: '01JFIRST', revision: '1', position: '10' },
      });
    });

    it('refuses a request_id reused for different content (AlreadyExists), even on another evaluation', () => {
      const withRequest = { ...SUBMIT, requestId: 'r1' };
      const prior = logged('2', '11', 'b'.repeat(64), 'other');
      expect(() => decideSubmit(withRequest, 'e1', undefined, prior, ctxFor(withRequest))).to.throw(
        AlreadyExistsError,
        /r1/,
      );
    });
  });

  describe('decideChange: the status machine', () => {
    for (const from of STATUSES) {
      for (const [type, command] of Object.entries(COMMANDS)) {
        const to = TARGET[type as LifecycleCommand['type']];
        const allowed = ALLOWED[from].includes(to);
        it(`${from} → ${to} (${type}) is ${allowed ? 'allowed' : 'FAILED_PRECONDITION'}`, () => {
          const ctx = ctxFor(command);
          if (allowed) {
            const decision = appended(decideChange(command, snapshot(from, '2'), undefined, ctx));
            expect(decision).to.deep.include({ evalId: 'e1', fromRevision: '2', toRevision: '3', status: to });
          } else {
            const err = thrown(() => decideChange(command, snapshot(from, '2'), undefined, ctx));
            expect(err).to.be.instanceOf(IllegalTransitionError);
            expect(err).to.include({ evalId: 'e1', from, to });
          }
        });
      }
    }

    it('lets an executor report a fast job straight from QUEUED to COMPLETED', () => {
      const command = COMMANDS.CompleteEvaluation;
      const decision = appended(decideChange(command, snapshot('queued', '1'), undefined, ctxFor(command)));
      expect(decision).to.deep.include({ fromRevision: '1', toRevision: '2', status: 'completed' });
    });

    it('keeps terminal states final for every command, including a second terminal one', () => {
      for (const from of ['completed', 'failed', 'cancelled'] as const) {
        for (const command of Object.values(COMMANDS)) {
          expect(
            () => decideChange(command, snapshot(from), undefined, ctxFor(command)),
            `${from}/${command.type}`,
          ).to.throw(IllegalTransitionError);
        }
      }
    });
  });

  describe('decideChange: events', () => {
    it('records who started it and when', () => {
      const command = COMMANDS.StartEvaluation;
      expect(appended(decideChange(command, snapshot('queued', '1'), undefined, ctxFor(command))).event).to.deep.equal({
        type: 'EvaluationStarted',
        data: { executorId: 'x1', containerId: 'c1', startedAt: NOW.toISOString() },
      });
    });

    it('records the exit code and the planned output reference of a completion', () => {
      const command = COMMANDS.CompleteEvaluation;
      expect(appended(decideChange(command, snapshot('running'), undefined, ctxFor(command))).event).to.deep.equal({
        type: 'EvaluationCompleted',
        data: { exitCode: 0, completedAt: NOW.toISOString(), output: BODY },
      });
    });

    it('records the reason, exit code and error reference of a failure', () => {
      const command = COMMANDS.FailEvaluation;
      expect(appended(decideChange(command, snapshot('running'), undefined, ctxFor(command))).event).to.deep.equal({
        type: 'EvaluationFailed',
        data: { exitCode: 2, reason: 'timeout', completedAt: NOW.toISOString(), error: BODY },
      });
    });

    it('records the reason of a cancellation', () => {
      const command = COMMANDS.CancelEvaluation;
      expect(appended(decideChange(command, snapshot('queued', '1'), undefined, ctxFor(command))).event).to.deep.equal({
        type: 'EvaluationCancelled',
        data: { reason: 'user', cancelledAt: NOW.toISOString() },
      });
    });

    it('refuses to complete or fail without a planned body', () => {
      for (const command of [COMMANDS.CompleteEvaluation, COMMANDS.FailEvaluation]) {
        expect(() => decideChange(command, snapshot('running'), undefined, ctxFor(command, 'no body'))).to.throw(
          /body/,
        );
      }
    });

    it('counts revisions beyond 2^53 without losing precision', () => {
      const command = COMMANDS.CancelEvaluation;
      const decision = appended(
        decideChange(command, snapshot('running', '9007199254740993'), undefined, ctxFor(command)),
      );
      expect(decision.fromRevision).to.equal('9007199254740993');
      expect(decision.toRevision).to.equal('9007199254740994');
    });
  });

  describe('decideChange: concurrency and idempotency', () => {
    it('refuses an unknown evaluation (NotFound)', () => {
      const command = COMMANDS.StartEvaluation;
      expect(() => decideChange(command, undefined, undefined, ctxFor(command))).to.throw(NotFoundError, /e1/);
    });

    it('applies a command whose expected_revision matches', () => {
      const command = { ...COMMANDS.StartEvaluation, expectedRevision: '1' };
      expect(appended(decideChange(command, snapshot('queued', '1'), undefined, ctxFor(command))).toRevision).to.equal(
        '2',
      );
    });

    it('refuses an expected_revision mismatch and names the current revision', () => {
      const command = { ...COMMANDS.CompleteEvaluation, expectedRevision: '1' };
      const err = thrown(() => decideChange(command, snapshot('running', '2'), undefined, ctxFor(command)));
      expect(err).to.be.instanceOf(RevisionConflictError);
      expect(err).to.include({ evalId: 'e1', expected: '1', current: '2' });
      expect((err as Error).message).to.include('revision 2');
    });

    it('answers a repeated request_id with the original answer, even after the evaluation moved on', () => {
      const command = { ...COMMANDS.StartEvaluation, requestId: 'r1' };
      const prior = logged('2', '15', commandHash(command));
      const decision = decideChange(command, snapshot('completed', '3'), prior, ctxFor(command));
      expect(decision).to.deep.equal({ kind: 'unchanged', result: { evalId: 'e1', revision: '2', position: '15' } });
    });

    it('refuses a request_id reused with different content (AlreadyExists)', () => {
      const command = { ...COMMANDS.StartEvaluation, requestId: 'r1' };
      const prior = logged('2', '15', commandHash({ ...command, executorId: 'someone-else' }));
      expect(() => decideChange(command, snapshot('running', '2'), prior, ctxFor(command))).to.throw(
        AlreadyExistsError,
        /r1/,
      );
    });

    it('answers the latest command repeated with the same content unchanged, even on a terminal evaluation', () => {
      for (const command of Object.values(COMMANDS)) {
        const status = TARGET[command.type];
        // The retry may still carry the revision the first attempt expected.
        const retry = { ...command, expectedRevision: '1' };
        const decision = decideChange(retry, snapshot(status, '2', commandHash(command)), undefined, ctxFor(retry));
        expect(decision, command.type).to.deep.equal({
          kind: 'unchanged',
          result: { evalId: 'e1', revision: '2', position: '20' },
        });
      }
    });

    it('does not treat the latest command with different content as a repeat', () => {
      const command = COMMANDS.CompleteEvaluation;
      const latest = commandHash(command);
      const other = { ...command, output: Buffer.from('different') };
      expect(() => decideChange(other, snapshot('completed', '3', latest), undefined, ctxFor(other))).to.throw(
        IllegalTransitionError,
      );
    });
  });

  describe('RecordMetrics', () => {
    const METRICS: RecordMetrics = {
      type: 'RecordMetrics',
      evalId: 'e1',
      points: [
        { name: 'loss', value: 0.5, unit: '', step: '2' },
        { name: 'loss', value: 0.9, unit: '', step: '1', timestamp: '2025-01-02T03:00:00.000Z' },
        { name: 'acc', value: 0.7, unit: '%' },
      ],
    };

    it('appends one event summing the call up per name, without changing the status', () => {
      for (const status of ['queued', 'running'] as const) {
        const decision = appended(decideChange(METRICS, snapshot(status), undefined, ctxFor(METRICS)));
        expect(decision).to.deep.include({ fromRevision: '2', toRevision: '3', status });
        expect(decision.event).to.deep.equal({
          type: 'EvaluationMetricsRecorded',
          data: {
            points: 3,
            metrics: [
              {
                name: 'acc',
                unit: '%',
                count: 1,
                min: 0.7,
                max: 0.7,
                lastValue: 0.7,
                lastTimestamp: NOW.toISOString(),
              },
              {
                name: 'loss',
                unit: '',
                count: 2,
                min: 0.5,
                max: 0.9,
                // step 2 is later than step 1 although step 1 was given after it
                lastValue: 0.5,
                lastStep: '2',
                lastTimestamp: NOW.toISOString(),
              },
            ],
          },
        });
        expect(decision.metrics?.names).to.deep.equal(['acc', 'loss']);
        expect(decision.metrics?.points.map((p) => p.timestamp)).to.deep.equal([
          NOW.toISOString(),
          '2025-01-02T03:00:00.000Z',
          NOW.toISOString(),
        ]);
      }
    });

    it('takes late points within the grace period after the end, and refuses them after it', () => {
      const ended = (ms: number): EvaluationSnapshot => ({
        ...snapshot('completed', '3'),
        endedAt: new Date(NOW.getTime() - ms),
      });
      expect(appended(decideChange(METRICS, ended(60_000), undefined, ctxFor(METRICS))).status).to.equal('completed');
      const err = thrown(() => decideChange(METRICS, ended(60_001), undefined, ctxFor(METRICS)));
      expect(err).to.be.instanceOf(FailedPreconditionError);
      expect(err).to.include({ reason: 'METRICS_CLOSED' });
    });

    it("refuses the name past the evaluation's limit, counting the names it has", () => {
      const withThree = { ...snapshot('running'), metricNames: ['acc', 'f1', 'g'] };
      const err = thrown(() => decideChange(METRICS, withThree, undefined, ctxFor(METRICS)));
      expect(err).to.be.instanceOf(ValidationError);
      expect((err as ValidationError).violations.map((v) => [v.field, v.rule])).to.deep.equal([
        ['metrics[0].name', 'TOO_MANY_NAMES'],
      ]);
      const known = { ...snapshot('running'), metricNames: ['acc', 'loss'] };
      expect(appended(decideChange(METRICS, known, undefined, ctxFor(METRICS))).metrics?.names).to.deep.equal([
        'acc',
        'loss',
      ]);
    });

    it("refuses timestamps more than a day outside the evaluation's life, naming each point", () => {
      const far: RecordMetrics = {
        ...METRICS,
        points: [
          { name: 'a', value: 1, unit: '', timestamp: new Date(NOW.getTime() + 86_400_001).toISOString() },
          { name: 'a', value: 1, unit: '', timestamp: new Date(NOW.getTime() + 86_400_000).toISOString() },
          { name: 'a', value: 1, unit: '', timestamp: '2024-12-31T03:00:00.000Z' },
        ],
      };
      const err = thrown(() => decideChange(far, snapshot('running'), undefined, ctxFor(far)));
      expect((err as ValidationError).violations.map((v) => v.field)).to.deep.equal([
        'metrics[0].timestamp',
        'metrics[2].timestamp',
      ]);
    });

    it('answers a repeat of the latest call unchanged, and checks expected_revision', () => {
      const repeat = decideChange(METRICS, snapshot('running', '4', commandHash(METRICS)), undefined, ctxFor(METRICS));
      expect(repeat).to.deep.equal({ kind: 'unchanged', result: { evalId: 'e1', revision: '4', position: '20' } });
      const stale = { ...METRICS, expectedRevision: '1' };
      expect(() => decideChange(stale, snapshot('running'), undefined, ctxFor(stale))).to.throw(RevisionConflictError);
    });
  });

  describe('AppendLogSegment', () => {
    const segment = (offset: number, text: string): AppendLogSegment => ({
      type: 'AppendLogSegment',
      evalId: 'e1',
      stream: 'stdout',
      offset,
      data: Buffer.from(text),
    });
    const holding = (stdout: number, status: Status = 'running'): EvaluationSnapshot => ({
      ...snapshot(status),
      logBytes: { stdout, stderr: 0 },
    });

    it('appends a segment where the stored log ends, as one event naming its place', () => {
      const command = segment(10, 'hello\n');
      const decision = appended(decideChange(command, holding(10), undefined, ctxFor(command, 'no body')));
      expect(decision.event).to.deep.equal({
        type: 'EvaluationLogsAppended',
        data: { stream: 'stdout', offset: 10, length: 6 },
      });
      expect(decision.log).to.deep.equal({ stream: 'stdout', offset: 10, length: 6 });
      expect([decision.status, decision.toRevision]).to.deep.equal(['running', '3']);
      // The query side's log followers are woken by reading the announcement's start, which
      // holds as long as the event keeps this shape and key order (shared/changes).
      const announced = encodeChange({
        position: '40',
        evalId: 'e1',
        revision: decision.toRevision,
        recordedAt: NOW.toISOString(),
        event: decision.event,
      });
      expect(announcedLogsAppended(announced)).to.deep.equal({ evalId: 'e1', stream: 'stdout' });
    });

    it('acknowledges a segment stored already, and refuses one that starts elsewhere, naming the offset', () => {
      const stored = segment(4, 'abc');
      expect(decideChange(stored, holding(7), undefined, ctxFor(stored, 'no body'))).to.deep.equal({
        kind: 'unchanged',
        result: { evalId: 'e1', revision: '2', position: '20' },
      });
      for (const offset of [5, 8]) {
        const command = segment(offset, 'abc');
        const err = thrown(() => decideChange(command, holding(7), undefined, ctxFor(command, 'no body')));
        expect(err, String(offset)).to.be.instanceOf(FailedPreconditionError);
        expect(err).to.include({ reason: 'LOG_GAP' });
        expect((err as Error).message).to.include(`must start at offset 7, not ${offset}`);
      }
    });

    it('takes segments while running and within the grace after the end; not while queued, not after', () => {
      const command = segment(0, 'x');
      const queued = thrown(() => decideChange(command, holding(0, 'queued'), undefined, ctxFor(command, 'no body')));
      expect(queued).to.include({ reason: 'LOGS_NOT_STARTED' });
      const ended = (ms: number): EvaluationSnapshot => ({
        ...holding(0, 'failed'),
        endedAt: new Date(NOW.getTime() - ms),
      });
      expect(appended(decideChange(command, ended(60_000), undefined, ctxFor(command, 'no body'))).status).to.equal(
        'failed',
      );
      const closed = thrown(() => decideChange(command, ended(60_001), undefined, ctxFor(command, 'no body')));
      expect(closed).to.include({ reason: 'LOGS_CLOSED' });
    });
  });

  describe('the executor binding', () => {
    const as = (subject: string, ...roles: Role[]): Caller => ({ subject, tenant: 't', roles: new Set(roles) });
    const bound = (status: Status): EvaluationSnapshot => ({ ...snapshot(status), executorId: 'x1' });
    const decideAs = (command: EvaluationCommand, state: EvaluationSnapshot | undefined, caller: Caller): Decision =>
      decideChange(command, state, undefined, { ...ctxFor(command), caller });
    const REPORTS: EvaluationCommand[] = [
      COMMANDS.CompleteEvaluation,
      COMMANDS.FailEvaluation,
      { type: 'RecordMetrics', evalId: 'e1', points: [{ name: 'loss', value: 1, unit: '' }] },
      {
        type: 'RecordSecurityEvent',
        evalId: 'e1',
        report: { kind: 'container_created', containerId: 'c1', image: 'i', limits: {} },
      } as unknown as EvaluationCommand,
      { type: 'AppendLogSegment', evalId: 'e1', stream: 'stdout', offset: 0, data: Buffer.from('x') },
    ];

    it('starts an evaluation only as the calling executor itself', () => {
      const start = COMMANDS.StartEvaluation;
      expect(appended(decideAs(start, snapshot('queued'), as('x1', 'executor'))).status).to.equal('running');
      const err = thrown(() => decideAs(start, snapshot('queued'), as('x2', 'executor')));
      expect(err).to.be.instanceOf(PermissionDeniedError);
      expect((err as Error).message)
        .to.include('executor_id x1 is not the caller')
        .and.include('x2');
    });

    it("refuses another executor's reports for a started evaluation, before any other rule", () => {
      for (const command of REPORTS) {
        expect(
          thrown(() => decideAs(command, bound('running'), as('x2', 'executor'))),
          command.type,
        ).to.be.instanceOf(PermissionDeniedError);
      }
      // Not even a replay, nor the answer of a later rule (an illegal transition), tells it anything.
      const ended = bound('completed');
      expect(thrown(() => decideAs(COMMANDS.FailEvaluation, ended, as('x2', 'executor')))).to.be.instanceOf(
        PermissionDeniedError,
      );
      expect(thrown(() => decideAs(COMMANDS.StartEvaluation, bound('running'), as('x2', 'executor')))).to.be.instanceOf(
        PermissionDeniedError,
      );
    });

    it('takes the reports of the bound executor, of an admin, and of the service itself', () => {
      const complete = COMMANDS.CompleteEvaluation;
      expect(appended(decideAs(complete, bound('running'), as('x1', 'executor'))).status).to.equal('completed');
      expect(appended(decideAs(complete, bound('running'), as('ops', 'admin'))).status).to.equal('completed');
      expect(appended(decideChange(complete, bound('running'), undefined, ctxFor(complete))).status).to.equal(
        'completed',
      );
    });

    it('lets the API cancel a bound evaluation, and any executor fail one that nobody started', () => {
      expect(appended(decideAs(COMMANDS.CancelEvaluation, bound('running'), as('api-1', 'api'))).status).to.equal(
        'cancelled',
      );
      expect(appended(decideAs(COMMANDS.FailEvaluation, snapshot('queued'), as('x2', 'executor'))).status).to.equal(
        'failed',
      );
    });
  });
});
