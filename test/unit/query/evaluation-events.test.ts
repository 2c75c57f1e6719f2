import { expect } from 'chai';
import type { Pool } from 'pg';
import { UnavailableError, ValidationError } from '../../../shared/errors';
import { EventType } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  encodeEventPageToken,
  EVENT_PAGE_SIZES,
  RequestChecks,
  type EventPageCursor,
} from '../../../services/query/domain/requests';
import {
  createPostgresEvaluationEvents,
  eventTypeOf,
  pageOf,
} from '../../../services/query/postgres/evaluation-events';

/** The violations `check` collects, as `field:rule`. */
function violations(check: (checks: RequestChecks) => unknown): string[] {
  const checks = new RequestChecks();
  check(checks);
  try {
    checks.done();
    return [];
  } catch (err) {
    expect(err).to.be.instanceOf(ValidationError);
    return (err as ValidationError).violations.map((v) => `${v.field}:${v.rule}`);
  }
}

const token = (cursor: Partial<EventPageCursor> = {}): string =>
  encodeEventPageToken({ evalId: 'e-1', afterRevision: 0n, lastRevision: 5n, ...cursor });

/** A token whose JSON is `fields`, as encodeEventPageToken writes its own. */
const forged = (fields: unknown): string => Buffer.from(JSON.stringify(fields), 'utf8').toString('base64url');

describe('GetEvaluationEvents request checks', () => {
  describe('page_size', () => {
    it('reads 0 as 100 and takes 1 to 1000', () => {
      const checks = new RequestChecks();
      expect(checks.pageSize(0, EVENT_PAGE_SIZES)).to.equal(100);
      expect(checks.pageSize(1, EVENT_PAGE_SIZES)).to.equal(1);
      expect(checks.pageSize(1000, EVENT_PAGE_SIZES)).to.equal(1000);
      checks.done();
    });

    it('refuses anything else as OUT_OF_RANGE, naming its bounds', () => {
      for (const size of [-1, 1001, 2 ** 31 - 1]) {
        expect(
          violations((c) => c.pageSize(size, EVENT_PAGE_SIZES)),
          String(size),
        ).to.deep.equal(['page_size:OUT_OF_RANGE']);
      }
      const checks = new RequestChecks();
      checks.pageSize(1001, EVENT_PAGE_SIZES);
      expect(() => checks.done()).to.throw('page_size must be from 1 to 1000 (0 means 100), not 1001');
    });

    it("keeps ListEvaluations' default of 50 without sizes", () => {
      expect(new RequestChecks().pageSize(0)).to.equal(50);
    });
  });

  describe('page_token', () => {
    it('is no cursor when empty, and the last revision served when it is ours for the same request', () => {
      const checks = new RequestChecks();
      expect(checks.eventPageToken('', 'e-1', 0n)).to.equal(undefined);
      expect(checks.eventPageToken(token(), 'e-1', 0n)).to.equal(5n);
      expect(checks.eventPageToken(token({ afterRevision: 3n, lastRevision: 9n }), 'e-1', 3n)).to.equal(9n);
      checks.done();
    });

    it('survives any eval_id and the largest revisions whole', () => {
      const evalId = 'ä/"\\\n'.repeat(30);
      const last = 2n ** 63n - 1n;
      const checks = new RequestChecks();
      expect(checks.eventPageToken(token({ evalId, lastRevision: last }), evalId, 0n)).to.equal(last);
      checks.done();
      expect(token()).to.match(/^[A-Za-z0-9_-]+$/);
    });

    it('refuses what it did not issue as INVALID', () => {
      const malformed = [
        'garbage!',
        'not json',
        Buffer.from('{"v":1').toString('base64url'),
        forged(null),
        forged([1]),
        forged({ v: 2, e: 'e-1', a: '0', r: '5' }),
        forged({ v: 1, e: 'e-1', a: '0' }),
        forged({ v: 1, e: 'e-1', a: 0, r: 5 }),
        forged({ v: 1, e: 'e-1', a: '0', r: '-5' }),
        forged({ v: 1, e: 'e-1', a: '0', r: '05' }),
        forged({ v: 1, e: 'e-1', a: '0', r: '1e3' }),
        forged({ v: 1, e: 'e-1', a: '5', r: '5' }), // a page's last revision is above after_revision
        forged({ v: 1, e: 7, a: '0', r: '5' }),
      ];
      for (const bad of malformed) {
        expect(
          violations((c) => c.eventPageToken(bad, 'e-1', 0n)),
          bad,
        ).to.deep.equal(['page_token:INVALID']);
      }
    });

    it('refuses a token issued for another eval_id or after_revision as MISMATCH', () => {
      expect(violations((c) => c.eventPageToken(token(), 'e-2', 0n))).to.deep.equal(['page_token:MISMATCH']);
      expect(violations((c) => c.eventPageToken(token(), 'e-1', 1n))).to.deep.equal(['page_token:MISMATCH']);
      expect(violations((c) => c.eventPageToken(token({ afterRevision: 2n }), 'e-1', 0n))).to.deep.equal([
        'page_token:MISMATCH',
      ]);
    });

    it('is not compared with an after_revision that broke its own rule (one violation, not two)', () => {
      expect(
        violations((c) => {
          const after = c.position('-1', 'after_revision');
          c.eventPageToken(token(), 'e-1', after);
        }),
      ).to.deep.equal(['after_revision:OUT_OF_RANGE']);
    });

    it('names every broken field at once with the others', () => {
      expect(
        violations((c) => {
          const evalId = c.evalId('');
          const after = c.position('-3', 'after_revision');
          c.pageSize(5000, EVENT_PAGE_SIZES);
          c.eventPageToken('%%%', evalId, after);
        }),
      ).to.deep.equal([
        'eval_id:REQUIRED',
        'after_revision:OUT_OF_RANGE',
        'page_size:OUT_OF_RANGE',
        'page_token:INVALID',
      ]);
    });
  });
});

describe('the audit trail reader (postgres/evaluation-events.ts)', () => {
  describe('eventTypeOf', () => {
    it("maps the log's event types to EventType", () => {
      expect(eventTypeOf('EvaluationQueued')).to.equal(EventType.EVENT_TYPE_EVALUATION_QUEUED);
      expect(eventTypeOf('EvaluationStarted')).to.equal(EventType.EVENT_TYPE_EVALUATION_STARTED);
      expect(eventTypeOf('EvaluationCompleted')).to.equal(EventType.EVENT_TYPE_EVALUATION_COMPLETED);
      expect(eventTypeOf('EvaluationFailed')).to.equal(EventType.EVENT_TYPE_EVALUATION_FAILED);
      expect(eventTypeOf('EvaluationCancelled')).to.equal(EventType.EVENT_TYPE_EVALUATION_CANCELLED);
    });

    it('is UNSPECIFIED for a type it does not know, not a failure (nor a property of every object)', () => {
      for (const text of ['EvaluationRenamed', '', 'constructor', 'toString', '__proto__', 'hasOwnProperty']) {
        expect(eventTypeOf(text), text).to.equal(EventType.EVENT_TYPE_UNSPECIFIED);
      }
    });
  });

  describe('pageOf', () => {
    const at = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 678));
    const row = (revision: number, fits = true) => ({
      position: String(100 + revision),
      revision: String(revision),
      event_type: 'EvaluationStarted',
      data: fits ? { executorId: `x-${revision}`, nested: { list: [1, 'two', null, true] } } : null,
      recorded_at: at,
      reporter: revision === 1 ? null : `executor-${revision}`,
      fits,
    });
    const nothing = {
      position: null,
      revision: null,
      event_type: null,
      data: null,
      recorded_at: null,
      reporter: null,
      fits: null,
    };

    it('is undefined without rows (no such evaluation), and an empty last page on the row of NULLs', () => {
      expect(pageOf([], 10)).to.equal(undefined);
      expect(pageOf([nothing], 10)).to.deep.equal({ events: [], more: false });
    });

    it('maps each row to an EventLogEntry, with its reporter (empty where none was recorded)', () => {
      expect(pageOf([row(1), row(2)], 10)).to.deep.equal({
        events: [
          {
            eventType: EventType.EVENT_TYPE_EVALUATION_STARTED,
            revision: '1',
            position: '101',
            recordedAt: at,
            data: { executorId: 'x-1', nested: { list: [1, 'two', null, true] } },
            reporter: '',
          },
          {
            eventType: EventType.EVENT_TYPE_EVALUATION_STARTED,
            revision: '2',
            position: '102',
            recordedAt: at,
            data: { executorId: 'x-2', nested: { list: [1, 'two', null, true] } },
            reporter: 'executor-2',
          },
        ],
        more: false,
      });
    });

    it('serves page_size rows of the page_size + 1 asked for, and says more follow', () => {
      const page = pageOf([row(1), row(2), row(3)], 2);
      expect(page?.events.map((e) => e.revision)).to.deep.equal(['1', '2']);
      expect(page?.more).to.equal(true);
      expect(pageOf([row(1), row(2)], 2)?.more).to.equal(false);
    });

    it('stops at the first row beyond the byte budget and says more follow', () => {
      const page = pageOf([row(1), row(2), row(3, false)], 10);
      expect(page?.events.map((e) => e.revision)).to.deep.equal(['1', '2']);
      expect(page?.more).to.equal(true);
    });
  });

  it('answers UNAVAILABLE when PostgreSQL cannot be reached', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const pool = { connect: () => Promise.reject(refused) } as unknown as Pool;
    const noArchive = { read: () => Promise.reject(new Error('no archive in this test')) };
    const err = await createPostgresEvaluationEvents(pool, noArchive)
      .page('default', 'e-1', 0n, 10)
      .catch((e: unknown) => e);
    expect(err).to.be.instanceOf(UnavailableError);
    expect((err as Error).message).to.equal("PostgreSQL is unavailable (reading an evaluation's events)");
  });
});
