import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { EvaluationStatus, type Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { ListEvaluationsRequest } from '../../../shared/generated/crucible/storage/v1/query_service';
import { call, expectError, statusDetails } from '../../support/clients';
import { createQueryHarness, type QueryHarness, type Replica } from './harness';

const QUEUED = EvaluationStatus.EVALUATION_STATUS_QUEUED;
const RUNNING = EvaluationStatus.EVALUATION_STATUS_RUNNING;

async function listAll(
  replica: Replica,
  request: Partial<ListEvaluationsRequest>,
): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let pageToken = '';
  let pages = 0;
  do {
    const page = await call(replica.client, replica.client.listEvaluations, {
      status: EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED,
      pageSize: 0,
      ...request,
      pageToken,
    });
    ids.push(...page.evaluations.map((e: Evaluation) => e.evalId));
    pageToken = page.nextPageToken;
    pages += 1;
  } while (pageToken !== '' && pages < 100);
  return { ids, pages };
}

for (const partitions of ['1', '3']) {
  describe(`query reads: GetEvaluation and ListEvaluations (${partitions} partition(s))`, function () {
    this.timeout(60_000);
    let h: QueryHarness;
    let replica: Replica;
    /** ids newest first by creation time (ties broken by id, descending). */
    let newestFirst: string[];

    before(async () => {
      h = await createQueryHarness({ READ_MODEL_PARTITIONS: partitions, CATCH_UP_INTERVAL_MS: '60000' });
      // 25 evaluations; created_at collides in pairs to exercise the id tie-break.
      const base = Date.UTC(2025, 5, 1);
      const made: { id: string; created: number }[] = [];
      for (let i = 0; i < 25; i += 1) {
        const id = `list-${String(i).padStart(2, '0')}`;
        const created = base + Math.floor(i / 2) * 1000;
        made.push({ id, created });
        await h.writer.submit(id, { createdAt: new Date(created) });
        if (i % 3 === 0) await h.writer.start(id);
      }
      newestFirst = made
        .sort((a, b) => (a.created !== b.created ? b.created - a.created : a.id < b.id ? 1 : -1))
        .map((m) => m.id);
      replica = await h.startReplica();
      await replica.service.projector.whenCaughtUp();
    });
    after(async () => {
      await h.close();
    });

    it('returns an evaluation and NOT_FOUND for an unknown id', async () => {
      const { evaluation } = await call(replica.client, replica.client.getEvaluation, { evalId: 'list-03' });
      expect(evaluation).to.include({ evalId: 'list-03', status: RUNNING, revision: '2', language: 'python' });
      expect(evaluation?.metadata).to.deep.equal({ suite: 'query-it' });
      const err = await expectError(call(replica.client, replica.client.getEvaluation, { evalId: 'nope' }));
      expect(err.code).to.equal(grpcStatus.NOT_FOUND);
      expect(err.details).to.equal('evaluation nope not found');
    });

    it('pages newest first, exactly and stably, with and without a status filter', async () => {
      const all = await listAll(replica, { pageSize: 4 });
      expect(all.ids).to.deep.equal(newestFirst);
      expect(all.pages).to.equal(7);
      const running = await listAll(replica, { status: RUNNING, pageSize: 2 });
      expect(running.ids).to.deep.equal(newestFirst.filter((id) => Number(id.slice(5)) % 3 === 0));
      const queued = await listAll(replica, { status: QUEUED });
      expect(queued.ids).to.deep.equal(newestFirst.filter((id) => Number(id.slice(5)) % 3 !== 0));
      expect(queued.pages).to.equal(1);
    });

    it('does not shift pages when evaluations are created while paging', async () => {
      const first = await call(replica.client, replica.client.listEvaluations, {
        status: 0,
        pageSize: 5,
        pageToken: '',
      });
      const newer = await h.writer.submit('list-new', { createdAt: new Date(Date.UTC(2030, 0, 1)), publish: true });
      await call(replica.client, replica.client.getEvaluation, { evalId: 'list-new', minPosition: newer.position });
      const second = await call(replica.client, replica.client.listEvaluations, {
        status: 0,
        pageSize: 5,
        pageToken: first.nextPageToken,
      });
      expect([...first.evaluations, ...second.evaluations].map((e) => e.evalId)).to.deep.equal(
        newestFirst.slice(0, 10),
      );
    });

    it('refuses bad page sizes, statuses and tokens with field violations', async () => {
      const err = await expectError(
        call(replica.client, replica.client.listEvaluations, {
          status: 17 as EvaluationStatus,
          pageSize: 1001,
          pageToken: 'garbage!',
        }),
      );
      expect(err.code).to.equal(grpcStatus.INVALID_ARGUMENT);
      const violations = statusDetails(err).badRequest?.fieldViolations.map((v) => `${v.field}:${v.reason}`);
      expect(violations).to.deep.equal(['status:UNKNOWN_VALUE', 'page_size:OUT_OF_RANGE', 'page_token:INVALID']);
      const page = await call(replica.client, replica.client.listEvaluations, {
        status: QUEUED,
        pageSize: 1,
        pageToken: '',
      });
      const mismatch = await expectError(
        call(replica.client, replica.client.listEvaluations, {
          status: RUNNING,
          pageSize: 1,
          pageToken: page.nextPageToken,
        }),
      );
      expect(statusDetails(mismatch).badRequest?.fieldViolations[0]).to.include({
        field: 'page_token',
        reason: 'MISMATCH',
      });
    });

    it('waits for min_position, then reads its own write; DEADLINE_EXCEEDED when it never comes', async () => {
      // Written without pub/sub and the catch-up timer far away: only a catch-up applies it, and
      // the reads below wait for it instead of answering NOT_FOUND or a stale list.
      const written = await h.writer.submit('mine', { publish: false });
      const read = call(replica.client, replica.client.getEvaluation, {
        evalId: 'mine',
        minPosition: written.position,
      });
      const listed = call(replica.client, replica.client.listEvaluations, {
        status: QUEUED,
        pageSize: 1000,
        pageToken: '',
        minPosition: written.position,
      });
      replica.service.projector.requestCatchUp('test');
      expect((await read).evaluation?.position).to.equal(written.position);
      expect((await listed).evaluations.map((e) => e.evalId)).to.include('mine');

      const far = String(BigInt(written.position) + 1000n);
      const late = await expectError(
        call(replica.client, replica.client.getEvaluation, { evalId: 'mine', minPosition: far }, 300),
      );
      expect(late.code).to.equal(grpcStatus.DEADLINE_EXCEEDED);
      const bad = await expectError(
        call(replica.client, replica.client.getEvaluation, { evalId: '', minPosition: '-3' }),
      );
      expect(statusDetails(bad).badRequest?.fieldViolations.map((v) => v.field)).to.deep.equal([
        'eval_id',
        'min_position',
      ]);
    });
  });
}
