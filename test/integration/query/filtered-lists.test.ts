import { createHash } from 'node:crypto';
import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { EvaluationStatus, type Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  ListOrder,
  ListView,
  type EvaluationFilter,
  type ListEvaluationsRequest,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { createShutdown } from '../../../services/query/live/shutdown';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';
import { call, expectError, statusDetails } from '../../support/clients';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

const {
  EVALUATION_STATUS_QUEUED: QUEUED,
  EVALUATION_STATUS_RUNNING: RUNNING,
  EVALUATION_STATUS_COMPLETED: COMPLETED,
} = EvaluationStatus;

/** One seeded evaluation, as a filter sees it. */
interface Seeded {
  readonly id: string;
  readonly created: number;
  readonly language: string;
  readonly engine: string;
  readonly suite: string;
  status: EvaluationStatus;
  executor: string;
}

const filter = (partial: Partial<EvaluationFilter>): EvaluationFilter => ({
  statuses: [],
  language: '',
  engine: '',
  executorId: '',
  metadata: {},
  ...partial,
});

function selects(f: EvaluationFilter, e: Seeded): boolean {
  return (
    (f.statuses.length === 0 || f.statuses.includes(e.status)) &&
    (f.language === '' || f.language === e.language) &&
    (f.engine === '' || f.engine === e.engine) &&
    (f.executorId === '' || f.executorId === e.executor) &&
    (f.metadata.suite === undefined || f.metadata.suite === e.suite) &&
    (f.createdAfter === undefined || e.created >= f.createdAfter.getTime()) &&
    (f.createdBefore === undefined || e.created < f.createdBefore.getTime())
  );
}

/** Newest first by creation time, ties by id (descending); reversed for oldest first. */
function ordered(seeded: readonly Seeded[], order: ListOrder): string[] {
  const newest = [...seeded]
    .sort((a, b) => (a.created !== b.created ? b.created - a.created : a.id < b.id ? 1 : -1))
    .map((e) => e.id);
  return order === ListOrder.LIST_ORDER_OLDEST_FIRST ? newest.reverse() : newest;
}

for (const partitions of ['1', '3']) {
  describe(`filtered lists and counts (${partitions} partition(s))`, function () {
    this.timeout(60_000);
    let h: QueryHarness;
    let replica: Replica;
    let layout: KeyLayout;
    const seeded: Seeded[] = [];
    const base = Date.UTC(2025, 5, 1);

    const listAll = async (
      request: Partial<ListEvaluationsRequest> & { firstToken?: string },
    ): Promise<{ ids: string[]; pages: number }> => {
      const { firstToken, ...rest } = request;
      const ids: string[] = [];
      let pageToken = firstToken ?? '';
      let pages = 0;
      do {
        const page = await call(replica.client, replica.client.listEvaluations, {
          status: EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED,
          pageSize: 7,
          ...rest,
          pageToken,
        });
        expect(page.evaluations.length).to.be.at.most(request.pageSize ?? 7);
        ids.push(...page.evaluations.map((e: Evaluation) => e.evalId));
        pageToken = page.nextPageToken;
        pages += 1;
      } while (pageToken !== '' && pages < 100);
      return { ids, pages };
    };

    before(async () => {
      h = await createQueryHarness({
        READ_MODEL_PARTITIONS: partitions,
        INDEXED_METADATA_KEYS: 'suite',
        CATCH_UP_INTERVAL_MS: '60000',
      });
      layout = createKeyLayout(h.config.redisKeyPrefix, Number(partitions), ['suite']);
      const languages = ['go', 'rust', 'python'];
      const engines = ['docker', 'gvisor'];
      for (let i = 0; i < 48; i += 1) {
        const e: Seeded = {
          id: `fl-${String(i).padStart(2, '0')}`,
          // Pairs share a creation time: the id breaks the tie.
          created: base + Math.floor(i / 2) * 1000,
          language: languages[i % 3] as string,
          engine: engines[Math.floor(i / 3) % 2] as string,
          suite: i % 4 === 0 ? 'nightly' : 'weekly',
          status: QUEUED,
          executor: '',
        };
        seeded.push(e);
        await h.writer.append(e.id, {
          type: 'EvaluationQueued',
          data: {
            codeHash: createHash('sha256').update(e.id).digest('hex'),
            codeSize: 8,
            language: e.language,
            engine: e.engine,
            timeoutSeconds: 30,
            metadata: { suite: e.suite, i },
            createdAt: new Date(e.created).toISOString(),
          },
        });
        if (i % 5 !== 0) {
          e.executor = `exec-${i % 2}`;
          e.status = RUNNING;
          await h.writer.append(e.id, {
            type: 'EvaluationStarted',
            data: { executorId: e.executor, containerId: 'c', startedAt: new Date(e.created).toISOString() },
          });
        }
        if (i % 7 === 0) {
          e.status = COMPLETED;
          await h.writer.complete(e.id);
        }
      }
      replica = await h.startReplica();
      await replica.service.projector.whenCaughtUp();
    });
    after(async () => {
      await h.close();
    });

    const FILTERS: [string, EvaluationFilter][] = [
      ['one status', filter({ statuses: [RUNNING] })],
      ['two statuses', filter({ statuses: [QUEUED, COMPLETED] })],
      ['a language in any status', filter({ language: 'go' })],
      ['a language in two statuses', filter({ statuses: [QUEUED, RUNNING], language: 'rust' })],
      ['an executor', filter({ executorId: 'exec-1' })],
      ['an indexed metadata value', filter({ metadata: { suite: 'nightly' } })],
      ['a creation range', filter({ createdAfter: new Date(base + 5000), createdBefore: new Date(base + 17_000) })],
      [
        'a status, a language and a creation range',
        filter({ statuses: [RUNNING], language: 'python', createdAfter: new Date(base + 3000) }),
      ],
      ['two facets (one checked on the records)', filter({ language: 'go', engine: 'gvisor' })],
      [
        'three facets',
        filter({ statuses: [RUNNING], executorId: 'exec-0', engine: 'docker', metadata: { suite: 'weekly' } }),
      ],
      ['nothing matches', filter({ language: 'cobol' })],
    ];

    for (const [name, f] of FILTERS) {
      it(`lists exactly what ${name} selects, in either order, and counts it`, async () => {
        const wanted = seeded.filter((e) => selects(f, e));
        for (const order of [ListOrder.LIST_ORDER_NEWEST_FIRST, ListOrder.LIST_ORDER_OLDEST_FIRST]) {
          const { ids } = await listAll({ filter: f, order });
          expect(ids, `order ${order}`).to.deep.equal(ordered(wanted, order));
        }
        const counted = await call(replica.client, replica.client.countEvaluations, { filter: f });
        const facets =
          [f.language, f.engine, f.executorId].filter((v) => v !== '').length + Object.keys(f.metadata).length;
        expect(counted.exact).to.equal(facets <= 1);
        if (counted.exact) expect(Number(counted.count)).to.equal(wanted.length);
        else expect(Number(counted.count)).to.be.at.least(wanted.length);
      });
    }

    it('keeps the older `status` field: alone, and joined with `statuses`', async () => {
      const { ids } = await listAll({ status: QUEUED });
      expect(ids).to.deep.equal(
        ordered(
          seeded.filter((e) => e.status === QUEUED),
          ListOrder.LIST_ORDER_NEWEST_FIRST,
        ),
      );
      const both = await listAll({ status: QUEUED, filter: filter({ statuses: [COMPLETED] }) });
      expect(both.ids).to.deep.equal(
        ordered(
          seeded.filter((e) => e.status === QUEUED || e.status === COMPLETED),
          ListOrder.LIST_ORDER_NEWEST_FIRST,
        ),
      );
    });

    it('pages on without a duplicate or a skip while evaluations arrive and others change status', async () => {
      const f = filter({ statuses: [RUNNING], language: 'rust' });
      const first = await call(replica.client, replica.client.listEvaluations, {
        status: 0,
        pageSize: 3,
        pageToken: '',
        filter: f,
      });
      const served = first.evaluations.map((e) => e.evalId);
      // A newer evaluation arrives in the filter, and one already served moves out of it.
      const arrived = 'fl-new';
      await h.writer.append(arrived, {
        type: 'EvaluationQueued',
        data: {
          codeHash: 'ab'.repeat(32),
          codeSize: 1,
          language: 'rust',
          engine: 'docker',
          timeoutSeconds: 30,
          metadata: {},
          createdAt: new Date(base + 999_000).toISOString(),
        },
      });
      await h.writer.append(
        arrived,
        {
          type: 'EvaluationStarted',
          data: { executorId: 'exec-9', containerId: 'c', startedAt: new Date().toISOString() },
        },
        { publish: true },
      );
      const moved = await h.writer.complete(served[0] as string, { publish: true });
      await replica.service.hub.waitForPosition(BigInt(moved.position), {
        signal: new AbortController().signal,
        shutdown: createShutdown().shutdown,
        deadline: undefined,
      });
      const rest = await listAll({ filter: f, pageSize: 3, firstToken: first.nextPageToken });
      const before = seeded.filter((e) => selects(f, e));
      // Everything after the first page that did not change: neither skipped nor repeated.
      expect([...served, ...rest.ids].filter((id) => id !== arrived)).to.deep.equal(
        ordered(before, ListOrder.LIST_ORDER_NEWEST_FIRST),
      );
      const moving = seeded.find((e) => e.id === served[0]);
      if (moving !== undefined) moving.status = COMPLETED;
    });

    it('SUMMARY leaves out previews and metadata', async () => {
      const page = await call(replica.client, replica.client.listEvaluations, {
        status: 0,
        pageSize: 5,
        pageToken: '',
        view: ListView.LIST_VIEW_SUMMARY,
        filter: filter({ statuses: [COMPLETED] }),
      });
      expect(page.evaluations).to.have.length.greaterThan(0);
      for (const e of page.evaluations) {
        expect(e.metadata).to.equal(undefined);
        expect(e.outputPreview).to.have.length(0);
        expect(e.status).to.equal(COMPLETED);
      }
    });

    it('refuses a metadata key that has no index, naming the indexed ones, and a token of another filter', async () => {
      const err = await expectError(
        call(replica.client, replica.client.listEvaluations, {
          status: 0,
          pageSize: 0,
          pageToken: '',
          filter: filter({ metadata: { team: 'a' } }),
        }),
      );
      expect(err.code).to.equal(grpcStatus.INVALID_ARGUMENT);
      const violations = statusDetails(err).badRequest?.fieldViolations ?? [];
      expect(violations.map((v) => [v.field, v.reason])).to.deep.equal([['filter.metadata["team"]', 'NOT_INDEXED']]);
      expect(violations[0]?.description).to.contain('the indexed keys are suite');
      const { nextPageToken } = await call(replica.client, replica.client.listEvaluations, {
        status: 0,
        pageSize: 2,
        pageToken: '',
        filter: filter({ language: 'go' }),
      });
      const mismatch = await expectError(
        call(replica.client, replica.client.listEvaluations, {
          status: 0,
          pageSize: 2,
          pageToken: nextPageToken,
          filter: filter({ language: 'rust' }),
        }),
      );
      expect(statusDetails(mismatch).badRequest?.fieldViolations.map((v) => [v.field, v.reason])).to.deep.equal([
        ['page_token', 'MISMATCH'],
      ]);
    });

    it('keeps the facet indexes consistent with the log (checker clean)', async () => {
      expect(await h.differences(layout)).to.deep.equal([]);
    });
  });
}
