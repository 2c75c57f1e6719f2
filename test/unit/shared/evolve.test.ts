import { expect } from 'chai';
import {
  evolve,
  ProjectionError,
  summarizeBatch,
  type EvaluationEvent,
  type MetricPoint,
  type RecordedEvent,
} from '../../../shared/domain';
import {
  EvaluationStatus,
  EventType,
  FailureReason,
  ViolationType,
  type Evaluation,
} from '../../../shared/generated/crucible/storage/v1/evaluation';

const CREATED = '2025-01-01T00:00:00.000Z';
const STARTED = '2025-01-01T00:00:02.000Z';
const ENDED = '2025-01-01T00:00:03.250Z';

function recorded(revision: number, event: EvaluationEvent, position = revision * 10): RecordedEvent {
  return { position: String(position), evalId: 'e1', revision: String(revision), recordedAt: CREATED, event };
}

const QUEUED = recorded(1, {
  type: 'EvaluationQueued',
  data: {
    codeHash: 'ab'.repeat(32),
    codeSize: 12,
    language: 'python',
    engine: 'docker',
    timeoutSeconds: 30,
    metadata: { team: 'a', n: 1 },
    createdAt: CREATED,
  },
});

const STARTED_EVENT: EvaluationEvent = {
  type: 'EvaluationStarted',
  data: { executorId: 'x1', containerId: 'c1', startedAt: STARTED },
};

const OUTPUT = Buffer.from('hello output');

function completed(revision: number): RecordedEvent {
  return recorded(revision, {
    type: 'EvaluationCompleted',
    data: {
      exitCode: 0,
      completedAt: ENDED,
      output: { previewBase64: OUTPUT.subarray(0, 5).toString('base64'), size: OUTPUT.length, location: 'postgres' },
    },
  });
}

function fold(events: RecordedEvent[]): Evaluation {
  let state: Evaluation | undefined;
  for (const e of events) state = evolve(state, e);
  if (state === undefined) return expect.fail('no events');
  return state;
}

describe('evolve', () => {
  it('creates the evaluation from EvaluationQueued', () => {
    const state = evolve(undefined, QUEUED);
    expect(state).to.deep.include({
      evalId: 'e1',
      status: EvaluationStatus.EVALUATION_STATUS_QUEUED,
      codeHash: 'ab'.repeat(32),
      codeSize: '12',
      language: 'python',
      engine: 'docker',
      timeoutSeconds: 30,
      metadata: { team: 'a', n: 1 },
      revision: '1',
      position: '10',
      runtimeMs: '0',
    });
    expect(state.createdAt?.toISOString()).to.equal(CREATED);
    expect(state.startedAt).to.equal(undefined);
  });

  it('records the executor and start time from EvaluationStarted', () => {
    const state = fold([QUEUED, recorded(2, STARTED_EVENT)]);
    expect(state).to.deep.include({
      status: EvaluationStatus.EVALUATION_STATUS_RUNNING,
      executorId: 'x1',
      containerId: 'c1',
      revision: '2',
      position: '20',
      codeHash: 'ab'.repeat(32),
    });
    expect(state.startedAt?.toISOString()).to.equal(STARTED);
  });

  it('records exit code, output reference and runtime from EvaluationCompleted', () => {
    const state = fold([QUEUED, recorded(2, STARTED_EVENT), completed(3)]);
    expect(state).to.deep.include({
      status: EvaluationStatus.EVALUATION_STATUS_COMPLETED,
      exitCode: 0,
      outputSize: String(OUTPUT.length),
      outputLocation: 'postgres',
      runtimeMs: '1250',
      revision: '3',
      position: '30',
      executorId: 'x1',
    });
    expect(state.outputPreview.toString()).to.equal('hello');
    expect(state.completedAt?.toISOString()).to.equal(ENDED);
  });

  it('reports runtime 0 when the evaluation went from QUEUED straight to COMPLETED', () => {
    const state = fold([QUEUED, completed(2)]);
    expect(state.status).to.equal(EvaluationStatus.EVALUATION_STATUS_COMPLETED);
    expect(state.runtimeMs).to.equal('0');
  });

  it('records reason, error reference and runtime from EvaluationFailed', () => {
    for (const [reason, expected] of [
      ['timeout', FailureReason.FAILURE_REASON_TIMEOUT],
      ['error', FailureReason.FAILURE_REASON_ERROR],
    ] as const) {
      const state = fold([
        QUEUED,
        recorded(2, STARTED_EVENT),
        recorded(3, {
          type: 'EvaluationFailed',
          data: {
            exitCode: 137,
            reason,
            completedAt: ENDED,
            error: { previewBase64: Buffer.from('Trace€').toString('base64'), size: 5000, location: 's3', s3Key: 'k' },
          },
        }),
      ]);
      expect(state, reason).to.deep.include({
        status: EvaluationStatus.EVALUATION_STATUS_FAILED,
        exitCode: 137,
        failureReason: expected,
        errorPreview: 'Trace€',
        errorSize: '5000',
        errorLocation: 's3',
        runtimeMs: '1250',
      });
    }
  });

  it('records the reason and end from EvaluationCancelled', () => {
    const state = fold([
      QUEUED,
      recorded(2, STARTED_EVENT),
      recorded(3, { type: 'EvaluationCancelled', data: { reason: 'user', cancelledAt: ENDED } }),
    ]);
    expect(state).to.deep.include({
      status: EvaluationStatus.EVALUATION_STATUS_CANCELLED,
      cancelReason: 'user',
      runtimeMs: '1250',
    });
    expect(state.completedAt?.toISOString()).to.equal(ENDED);
  });

  it('never reports a negative runtime when clocks disagree', () => {
    const early = recorded(3, { type: 'EvaluationCancelled', data: { reason: '', cancelledAt: CREATED } });
    expect(fold([QUEUED, recorded(2, STARTED_EVENT), early]).runtimeMs).to.equal('0');
  });

  it('keeps 64-bit positions and revisions exact', () => {
    const state = evolve(undefined, { ...QUEUED, position: '9007199254740993' });
    expect(state.position).to.equal('9007199254740993');
    const next = evolve(
      { ...state, revision: '9007199254740992' },
      { ...recorded(0, STARTED_EVENT), revision: '9007199254740993' },
    );
    expect(next.revision).to.equal('9007199254740993');
  });

  it('does not change the state it is given', () => {
    const state = evolve(undefined, QUEUED);
    const copy = structuredClone(state);
    evolve(state, recorded(2, STARTED_EVENT));
    expect(state).to.deep.equal(copy);
  });

  it('throws ProjectionError for an event that is not the next revision', () => {
    const state = evolve(undefined, QUEUED);
    expect(() => evolve(state, recorded(3, STARTED_EVENT))).to.throw(ProjectionError, /revision 3.*expected 2/);
    expect(() => evolve(state, recorded(1, STARTED_EVENT))).to.throw(ProjectionError);
    expect(() => evolve(undefined, recorded(2, QUEUED.event))).to.throw(ProjectionError);
  });

  it('throws ProjectionError for a change to an unknown evaluation or a second EvaluationQueued', () => {
    expect(() => evolve(undefined, recorded(1, STARTED_EVENT))).to.throw(ProjectionError, /unknown evaluation/);
    expect(() => evolve(evolve(undefined, QUEUED), recorded(2, QUEUED.event))).to.throw(
      ProjectionError,
      /queued twice/,
    );
  });

  describe('metrics', () => {
    const at = (ms: number): string => new Date(Date.parse(CREATED) + ms).toISOString();
    const point = (name: string, value: number, step: string | undefined, ms: number): MetricPoint => ({
      name,
      value,
      unit: 'u',
      timestamp: at(ms),
      ...(step !== undefined ? { step } : {}),
    });
    const metricsEvent = (revision: number, points: MetricPoint[]): RecordedEvent =>
      recorded(revision, {
        type: 'EvaluationMetricsRecorded',
        data: { points: points.length, metrics: summarizeBatch(points) },
      });

    it('folds each call into one summary per name, exact whatever the split into calls', () => {
      const points = [
        point('loss', 3, '1', 0),
        point('loss', 1, '3', 5),
        point('acc', 0.5, undefined, 9),
        point('loss', -2, '2', 7),
        point('acc', 0.75, undefined, 2),
        point('loss', 4, '3', 5), // same step and time as the 2nd: the later recorded wins
      ];
      const whole = fold([QUEUED, metricsEvent(2, points)]);
      for (let split = 1; split < points.length; split += 1) {
        const parts = fold([QUEUED, metricsEvent(2, points.slice(0, split)), metricsEvent(3, points.slice(split))]);
        expect(parts.metrics, `split at ${split}`).to.deep.equal(whole.metrics);
      }
      expect(whole.metrics).to.deep.equal([
        {
          name: 'acc',
          unit: 'u',
          count: '2',
          min: 0.5,
          max: 0.75,
          lastValue: 0.5,
          lastStep: undefined,
          lastTimestamp: new Date(at(9)),
        },
        {
          name: 'loss',
          unit: 'u',
          count: '4',
          min: -2,
          max: 4,
          lastValue: 4,
          lastStep: '3',
          lastTimestamp: new Date(at(5)),
        },
      ]);
    });

    it('keeps the status and names the last event, also for late metrics after the end', () => {
      const state = fold([QUEUED, completed(2), metricsEvent(3, [point('loss', 1, undefined, 0)])]);
      expect(state.status).to.equal(EvaluationStatus.EVALUATION_STATUS_COMPLETED);
      expect(state.lastEventType).to.equal(EventType.EVENT_TYPE_METRICS_RECORDED);
      expect(state.revision).to.equal('3');
      expect(fold([QUEUED, completed(2)]).lastEventType).to.equal(EventType.EVENT_TYPE_EVALUATION_COMPLETED);
    });
  });

  it("counts violations per type, in the enum's order, and leaves the rest of the state to the other events", () => {
    const violation = (revision: number, violationType: 'memory' | 'syscall'): RecordedEvent =>
      recorded(revision, {
        type: 'EvaluationSecurityViolation',
        data: {
          containerId: 'c1',
          violationType,
          severity: 'high',
          actionTaken: 'killed',
          details: {},
          occurredAt: CREATED,
        },
      });
    const created = recorded(2, {
      type: 'EvaluationContainerCreated',
      data: { containerId: 'c1', image: 'img', limits: { pids: '64' }, occurredAt: CREATED },
    });
    const state = fold([QUEUED, created, violation(3, 'syscall'), violation(4, 'memory'), violation(5, 'syscall')]);
    expect(state.violations).to.deep.equal([
      { violationType: ViolationType.VIOLATION_TYPE_MEMORY, count: '1' },
      { violationType: ViolationType.VIOLATION_TYPE_SYSCALL, count: '2' },
    ]);
    expect(state.status).to.equal(EvaluationStatus.EVALUATION_STATUS_QUEUED);
    expect(state.lastEventType).to.equal(EventType.EVENT_TYPE_SECURITY_VIOLATION);
    expect(fold([QUEUED, created]).lastEventType).to.equal(EventType.EVENT_TYPE_CONTAINER_CREATED);
  });

  it("keeps each log stream's stored size from EvaluationLogsAppended, nothing else", () => {
    const logs = (revision: number, stream: 'stdout' | 'stderr', offset: number, length: number): RecordedEvent =>
      recorded(revision, { type: 'EvaluationLogsAppended', data: { stream, offset, length } });
    const state = fold([
      QUEUED,
      recorded(2, STARTED_EVENT),
      logs(3, 'stdout', 0, 100),
      logs(4, 'stderr', 0, 7),
      logs(5, 'stdout', 100, 20),
    ]);
    expect([state.stdoutBytes, state.stderrBytes]).to.deep.equal(['120', '7']);
    expect(state.status).to.equal(EvaluationStatus.EVALUATION_STATUS_RUNNING);
    expect(state.lastEventType).to.equal(EventType.EVENT_TYPE_LOGS_APPENDED);
  });

  it("moves the output's or the error's location with EvaluationBlobMoved, and only those", () => {
    const moved = (revision: number, kind: 'output' | 'stdout'): RecordedEvent =>
      recorded(revision, { type: 'EvaluationBlobMoved', data: { kind, key: `k-${kind}`, to: 's3' } });
    const inFallback: RecordedEvent = recorded(2, {
      type: 'EvaluationCompleted',
      data: {
        exitCode: 0,
        completedAt: ENDED,
        output: { previewBase64: '', size: 5000, location: 'file', s3Key: 'k' },
      },
    });
    expect(fold([QUEUED, inFallback]).outputLocation).to.equal('file');
    const state = fold([QUEUED, inFallback, moved(3, 'stdout'), moved(4, 'output')]);
    expect(state.outputLocation).to.equal('s3');
    expect(state.lastEventType).to.equal(EventType.EVENT_TYPE_BLOB_MOVED);
    expect(fold([QUEUED, inFallback, moved(3, 'stdout')]).outputLocation).to.equal('file');
  });
});
