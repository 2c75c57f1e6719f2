import { expect } from 'chai';
import type { Client, QueryResult } from 'pg';
import { DEFAULT_TENANT } from '../../../shared/domain';
import type { AppendRequest } from '../../../services/command/application/ports';
import { appendStatement } from '../../../services/command/postgres/evaluation-store';
import { createHarness, handWrittenRequest, type Harness } from './harness';

type Decision = AppendRequest['decision'];

describe('the append statement: a write that finds no row to change changes nothing', function () {
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    await h.close();
  });

  /**
   * Runs `request`'s statement in a transaction of its own on the inspection connection, then
   * reads the evaluation's row in the same transaction (which only works if the statement raised
   * nothing; undefined when there is none), and rolls back.
   */
  async function runAlone(
    request: AppendRequest,
  ): Promise<{ returned: number; row: { revision: string; status: string; output_location: string } | undefined }> {
    const sql: Client = h.sql;
    await sql.query('BEGIN');
    try {
      await sql.query(`SET LOCAL crucible.tenant = '${DEFAULT_TENANT}'`);
      const result: QueryResult = await sql.query(appendStatement(request));
      const { rows } = await sql.query<{ revision: string; status: string; output_location: string }>(
        'SELECT revision::text, status, output_location FROM evaluations WHERE eval_id = $1',
        [request.decision.evalId],
      );
      return { returned: result.rowCount ?? 0, row: rows[0] };
    } finally {
      await sql.query('ROLLBACK');
    }
  }

  it('is a conflict, not an error that would abort its batch, when its request id is logged already (a retry)', async () => {
    await h.commands.submit({ evalId: 'as-retry' });
    await h.commands.cancel({ evalId: 'as-retry', reason: 'first', requestId: 'as-retry-cancel' });
    // The retry of a change with that request id, decided against the state the cancel left.
    const decision: Decision = {
      kind: 'append',
      evalId: 'as-retry',
      fromRevision: '2',
      toRevision: '3',
      status: 'cancelled',
      event: { type: 'EvaluationCancelled', data: { reason: 'again', cancelledAt: new Date().toISOString() } },
    };
    const { returned, row } = await runAlone(handWrittenRequest(decision, 'as-retry-cancel'));
    expect(returned).to.equal(0);
    expect(row?.revision).to.equal('2');

    const submit = await runAlone(handWrittenRequest({ submit: 'as-retry-new' }, 'as-retry-cancel'));
    expect(submit.returned, 'a submit with a logged request id').to.equal(0);
    expect(submit.row).to.equal(undefined);
  });

  it('leaves the evaluation at its revision when the blob it moves is not in the fallback store', async () => {
    await h.commands.submit({ evalId: 'as-move' });
    await h.commands.start({ evalId: 'as-move' });
    // Larger than INLINE_OUTPUT_MAX_BYTES: kept in S3 from the start.
    await h.commands.complete({
      evalId: 'as-move',
      output: Buffer.alloc(h.env.config.limits.inlineOutputMaxBytes + 1, 'x'),
    });
    const { rows } = await h.sql.query<{ s3_key: string; blob_store: string }>(
      `SELECT s3_key, blob_store FROM evaluation_bodies WHERE eval_id = 'as-move' AND kind = 'output'`,
    );
    expect(rows[0]?.blob_store).to.equal('s3');
    const decision: Decision = {
      kind: 'append',
      evalId: 'as-move',
      fromRevision: '3',
      toRevision: '4',
      status: 'completed',
      event: { type: 'EvaluationBlobMoved', data: { kind: 'output', key: rows[0]!.s3_key, to: 's3' } },
    };
    const { returned, row } = await runAlone(handWrittenRequest(decision));
    expect(returned).to.equal(0);
    expect(row?.revision, 'no revision without its event').to.equal('3');
  });
});
