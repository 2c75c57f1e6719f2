import { expect } from 'chai';
import { ValidationError } from '../../../shared/errors';
import {
  decodeExecutorHealth,
  encodeExecutorHealth,
  executorKeys,
  executorStateOfProto,
  executorStateToProto,
  EXECUTOR_STATES,
  validateExecutorHealth,
  type StoredExecutorHealth,
} from '../../../shared/executors';
import { ReportExecutorHealthRequest } from '../../../shared/generated/crucible/storage/v1/command_service';
import { ExecutorStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';

function request(overrides: Partial<ReportExecutorHealthRequest> = {}): ReportExecutorHealthRequest {
  return ReportExecutorHealthRequest.fromPartial({
    executorId: 'executor-1',
    status: ExecutorStatus.EXECUTOR_STATUS_HEALTHY,
    capacity: 4,
    running: 1,
    version: '1.2.3',
    metrics: { load: 0.5, free_memory_bytes: 2e9 },
    ...overrides,
  });
}

/** The [field, rule] pairs a validation throws; fails the test when it does not throw. */
function violationsOf(overrides: Partial<ReportExecutorHealthRequest>): [string, string][] {
  try {
    validateExecutorHealth(request(overrides));
  } catch (err) {
    expect(err).to.be.instanceOf(ValidationError);
    const { violations } = err as ValidationError;
    for (const v of violations) expect(v.description, `${v.field}/${v.rule} has a description`).to.not.equal('');
    return violations.map((v) => [v.field, v.rule]);
  }
  return expect.fail('expected a ValidationError');
}

function metrics(count: number): Record<string, number> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`m${i}`, i]));
}

describe('executor health: shared rules and stored form', () => {
  describe('validateExecutorHealth', () => {
    it('turns a valid request into a report', () => {
      expect(validateExecutorHealth(request())).to.deep.equal({
        executorId: 'executor-1',
        status: 'healthy',
        capacity: 4,
        running: 1,
        version: '1.2.3',
        metrics: { load: 0.5, free_memory_bytes: 2e9 },
      });
    });

    it('takes every status but UNSPECIFIED, and the limits exactly', () => {
      for (const [status, state] of [
        [ExecutorStatus.EXECUTOR_STATUS_HEALTHY, 'healthy'],
        [ExecutorStatus.EXECUTOR_STATUS_DEGRADED, 'degraded'],
        [ExecutorStatus.EXECUTOR_STATUS_DRAINING, 'draining'],
      ] as const) {
        expect(validateExecutorHealth(request({ status })).status).to.equal(state);
      }
      const atLimits = validateExecutorHealth(
        request({
          executorId: 'e'.repeat(128),
          version: 'v'.repeat(64),
          capacity: 0,
          running: 0,
          metrics: { ...metrics(63), ['n'.repeat(128)]: -1.5 },
        }),
      );
      expect(Object.keys(atLimits.metrics)).to.have.length(64);
      expect(validateExecutorHealth(request({ version: '', metrics: {} }))).to.deep.include({
        version: '',
        metrics: {},
      });
    });

    it('refuses a missing, long or NUL-holding executor_id', () => {
      expect(violationsOf({ executorId: '' })).to.deep.equal([['executor_id', 'REQUIRED']]);
      expect(violationsOf({ executorId: 'e'.repeat(129) })).to.deep.equal([['executor_id', 'TOO_LONG']]);
      expect(violationsOf({ executorId: 'a\u0000b' })).to.deep.equal([['executor_id', 'INVALID_CHARACTER']]);
    });

    it('refuses an UNSPECIFIED or unknown status', () => {
      expect(violationsOf({ status: ExecutorStatus.EXECUTOR_STATUS_UNSPECIFIED })).to.deep.equal([
        ['status', 'REQUIRED'],
      ]);
      expect(violationsOf({ status: 9 as ExecutorStatus })).to.deep.equal([['status', 'UNKNOWN']]);
      expect(violationsOf({ status: ExecutorStatus.UNRECOGNIZED })).to.deep.equal([['status', 'UNKNOWN']]);
    });

    it('refuses negative counts', () => {
      expect(violationsOf({ capacity: -1 })).to.deep.equal([['capacity', 'NOT_NEGATIVE']]);
      expect(violationsOf({ running: -2 })).to.deep.equal([['running', 'NOT_NEGATIVE']]);
    });

    it('refuses a long or NUL-holding version', () => {
      expect(violationsOf({ version: 'v'.repeat(65) })).to.deep.equal([['version', 'TOO_LONG']]);
      expect(violationsOf({ version: '1\u0000' })).to.deep.equal([['version', 'INVALID_CHARACTER']]);
    });

    it('refuses more than 64 metrics whole, without checking each', () => {
      expect(violationsOf({ metrics: { ...metrics(64), bad: Number.NaN } })).to.deep.equal([['metrics', 'TOO_MANY']]);
    });

    it('names each broken metric by its key', () => {
      const long = 'n'.repeat(129);
      expect(
        violationsOf({
          metrics: {
            '': 1,
            [long]: 2,
            'a\u0000': 3,
            nan: Number.NaN,
            inf: Number.POSITIVE_INFINITY,
            ninf: Number.NEGATIVE_INFINITY,
            fine: 4,
          },
        }),
      ).to.deep.equal([
        ['metrics[""]', 'REQUIRED'],
        [`metrics["${'n'.repeat(128)}…"]`, 'TOO_LONG'],
        ['metrics["a\\u0000"]', 'INVALID_CHARACTER'],
        ['metrics["nan"]', 'FINITE'],
        ['metrics["inf"]', 'FINITE'],
        ['metrics["ninf"]', 'FINITE'],
      ]);
    });

    it('reports every broken rule at once', () => {
      expect(
        violationsOf({
          executorId: '',
          status: ExecutorStatus.EXECUTOR_STATUS_UNSPECIFIED,
          capacity: -1,
          running: -1,
          version: 'v'.repeat(65),
          metrics: { x: Number.NaN },
        }),
      ).to.deep.equal([
        ['executor_id', 'REQUIRED'],
        ['status', 'REQUIRED'],
        ['capacity', 'NOT_NEGATIVE'],
        ['running', 'NOT_NEGATIVE'],
        ['version', 'TOO_LONG'],
        ['metrics["x"]', 'FINITE'],
      ]);
    });
  });

  describe('states', () => {
    it('map to and from the proto enum', () => {
      for (const state of EXECUTOR_STATES) expect(executorStateOfProto(executorStateToProto(state))).to.equal(state);
      expect(executorStateOfProto(ExecutorStatus.EXECUTOR_STATUS_UNSPECIFIED)).to.equal(undefined);
      expect(executorStateOfProto(42)).to.equal(undefined);
    });
  });

  describe('keys', () => {
    it('share one hash tag under the prefix, and stay clear of the read models', () => {
      const keys = executorKeys('crucible');
      expect(keys.health('exec-1')).to.equal('crucible:{executors}:health:exec-1');
      expect(keys.lastSeen).to.equal('crucible:{executors}:last-seen');
      const tag = (key: string): string => /\{([^}]*)\}/.exec(key)?.[1] ?? key;
      expect(tag(keys.health('a{b}c'))).to.equal(tag(keys.lastSeen));
      // A read-model rebuild deletes every key matching `P:{P:*}:*`.
      expect(keys.lastSeen.startsWith('crucible:{crucible:')).to.equal(false);
    });
  });

  describe('codec', () => {
    const stored: StoredExecutorHealth = {
      executorId: 'executor-ü-1',
      tenant: 'acme',
      status: 'draining',
      capacity: 8,
      running: 3,
      version: '2025.1',
      metrics: { load: 0.75, 'gpu/0.util': 99.5, tiny: -1e-300, big: Number.MAX_VALUE, zero: 0 },
      reportedAt: new Date('2025-03-04T05:06:07.089Z'),
    };

    it('round-trips a report with its metrics and reportedAt', () => {
      expect(decodeExecutorHealth(encodeExecutorHealth(stored))).to.deep.equal(stored);
      const bare = { ...stored, version: '', metrics: {} };
      expect(decodeExecutorHealth(encodeExecutorHealth(bare))).to.deep.equal(bare);
    });

    it('keeps a metric named __proto__ as a metric', () => {
      const odd = { ...stored, metrics: Object.fromEntries([['__proto__', 1]]) as Record<string, number> };
      const decoded = decodeExecutorHealth(encodeExecutorHealth(odd));
      expect(Object.entries(decoded?.metrics ?? {})).to.deep.equal([['__proto__', 1]]);
    });

    it('decodes nothing that is not a valid report', () => {
      const json = JSON.parse(encodeExecutorHealth(stored)) as Record<string, unknown>;
      const broken = (changes: Record<string, unknown>): string => JSON.stringify({ ...json, ...changes });
      for (const text of [
        'not json',
        'null',
        '[]',
        broken({ status: 'asleep' }),
        broken({ status: 1 }),
        broken({ capacity: 1.5 }),
        broken({ running: '3' }),
        broken({ capacity: -1 }),
        broken({ executorId: '' }),
        broken({ version: 7 }),
        broken({ metrics: [1] }),
        broken({ metrics: { x: 'y' } }),
        broken({ reportedAt: 'yesterday' }),
        broken({ reportedAt: undefined }),
      ]) {
        expect(decodeExecutorHealth(text), text).to.equal(undefined);
      }
    });
  });
});
