import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createClients, expectError, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import { startPrivateStack, type PrivateStack } from '../support/private-servers';
import {
  expectReadModelsEqualLog,
  plansFor,
  readEventLog,
  runStep,
  startBurst,
  startCommandService,
  startQueryService,
  waitForProjection,
  withDatabase,
  type Step,
  cancelOpenStreams,
} from './harness';

describe('fault: PostgreSQL stops (pg_ctl stop -m fast) and comes back', function () {
  this.timeout(180_000);
  let stack: PrivateStack;
  let commandService: RunningService | undefined;
  let queryService: RunningService | undefined;
  let clients: Clients | undefined;

  before(async () => {
    stack = await startPrivateStack();
    commandService = await startCommandService(stack.env);
    queryService = await startQueryService(stack.env);
    clients = createClients(commandService.address, queryService.address);
  });

  after(async () => {
    cancelOpenStreams();
    clients?.close();
    await queryService?.stop();
    await commandService?.stop();
    await stack?.close();
  });

  it('commands get UNAVAILABLE during the outage, succeed after it, and nothing is half-written', async () => {
    if (clients === undefined) throw new Error('set-up failed');
    const { command, query } = clients;

    // Evaluations that the outage's commands act on.
    const existing = Array.from({ length: 4 }, (_, i) => `existing-${i}`);
    for (const evalId of existing) await runStep(command, evalId, 'submit', { requestId: `${evalId}-submit` });

    // Commands are in flight when the server goes: some commit, some fail, none may half-write.
    const plans = plansFor('inflight', 600);
    const burst = startBurst(command, plans, { concurrency: 4 });
    await burst.whenSucceeded(100);
    await stack.postgres.stop();

    // Every kind of command, each with a request id so that the retry is recognised.
    const outageCommands: { evalId: string; step: Step; requestId: string }[] = [
      { evalId: 'outage-new-0', step: 'submit', requestId: 'outage-submit-0' },
      { evalId: 'outage-new-1', step: 'submit', requestId: 'outage-submit-1' },
      { evalId: 'existing-0', step: 'start', requestId: 'outage-start-0' },
      { evalId: 'existing-1', step: 'cancel', requestId: 'outage-cancel-1' },
      { evalId: 'existing-2', step: 'complete', requestId: 'outage-complete-2' },
      { evalId: 'existing-3', step: 'fail', requestId: 'outage-fail-3' },
    ];
    for (const c of outageCommands) {
      const err = await expectError(runStep(command, c.evalId, c.step, { requestId: c.requestId }));
      expect(status[err.code], `${c.step} ${c.evalId} during the outage: ${err.details}`).to.equal('UNAVAILABLE');
    }
    // In-flight commands that did not make it failed the same retryable way, never INTERNAL.
    const failedSoFar = [...burst.failures];
    expect(failedSoFar.length, 'the burst ran into the outage').to.be.greaterThan(0);
    for (const f of failedSoFar) {
      expect(status[f.error.code], `${f.step} ${f.evalId}: ${f.error.details}`).to.equal('UNAVAILABLE');
    }

    await stack.postgres.start();

    // Right after the restart, on the same port, the same commands succeed: no stale
    // connection makes the first ones fail.
    for (const c of outageCommands) {
      const done = await runStep(command, c.evalId, c.step, { requestId: c.requestId });
      expect(done.evalId).to.equal(c.evalId);
    }
    await burst.done;
    for (const f of burst.failures) {
      expect(status[f.error.code], `${f.step} ${f.evalId}: ${f.error.details}`).to.equal('UNAVAILABLE');
    }
    // Retrying what failed (the same command, then the rest of its plan) succeeds: UNAVAILABLE
    // meant nothing was written, or, for a commit whose answer was lost, an idempotent replay.
    const retryFailures: string[] = [];
    for (const f of burst.failures) {
      const plan = plans.find((p) => p.evalId === f.evalId);
      for (const step of plan?.steps.slice(plan.steps.indexOf(f.step)) ?? []) {
        await runStep(command, f.evalId, step).catch((err: unknown) =>
          retryFailures.push(`${step} ${f.evalId}: ${String(err)}`),
        );
      }
    }
    expect(retryFailures).to.deep.equal([]);

    // Nothing half-written.
    await withDatabase(stack.databaseUrl, async (db) => {
      const { rows: totals } = await db.query<{ count: string; max: string; head: string }>(
        `SELECT count(*)::text AS count, max(position)::text AS max,
                (SELECT position::text FROM event_log_head WHERE id = 1) AS head
           FROM evaluation_events`,
      );
      const total = totals[0];
      expect(total?.max, 'positions are dense: max(position) = count(*)').to.equal(total?.count);
      expect(total?.head, 'event_log_head = max(position)').to.equal(total?.max);
      expect(Number(total?.count)).to.equal(existing.length + 600 + outageCommands.length);

      const { rows: revisionMismatches } = await db.query<{ eval_id: string }>(
        `SELECT e.eval_id FROM evaluations e
          WHERE e.revision <> (SELECT count(*) FROM evaluation_events v WHERE v.eval_id = e.eval_id)
             OR e.revision <> (SELECT max(v.revision) FROM evaluation_events v WHERE v.eval_id = e.eval_id)`,
      );
      expect(revisionMismatches, 'evaluations whose revision is not their number of events (1..n)').to.deep.equal([]);

      const { rows: bodyMismatches } = await db.query<{ eval_id: string }>(
        `SELECT e.eval_id FROM evaluations e
           LEFT JOIN evaluation_bodies b ON b.eval_id = e.eval_id AND b.kind <> 'code'
          WHERE (e.status IN ('completed', 'failed')) <> (b.eval_id IS NOT NULL)
             OR NOT EXISTS (SELECT 1 FROM evaluation_bodies c WHERE c.eval_id = e.eval_id AND c.kind = 'code')`,
      );
      expect(
        bodyMismatches,
        'evaluations without their code, terminal outputs without their body row, or bodies of unfinished evaluations',
      ).to.deep.equal([]);

      const requestIds = [...outageCommands.map((c) => c.requestId), ...existing.map((id) => `${id}-submit`)];
      const { rows: perRequest } = await db.query<{ request_id: string; count: string }>(
        `SELECT request_id, count(*)::text AS count FROM evaluation_events WHERE request_id = ANY($1) GROUP BY request_id`,
        [requestIds],
      );
      expect(Object.fromEntries(perRequest.map((r) => [r.request_id, r.count]))).to.deep.equal(
        Object.fromEntries(requestIds.map((id) => [id, '1'])),
      );
    });

    // The query side waited out the outage and caught up by itself.
    const log = await readEventLog(stack.databaseUrl);
    await waitForProjection(query, log[log.length - 1]?.position ?? 0n, 60_000);
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
  });
});
