import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { Client } from 'pg';
import { EvaluationStatus } from '../../shared/generated/crucible/storage/v1/evaluation';
import { call, createClients, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import { startPrivateStack, type PrivateStack } from '../support/private-servers';
import {
  expectReadModelsEqualLog,
  expectSameAsLog,
  pollUntil,
  readEventLog,
  recordFirehose,
  runStep,
  startCommandService,
  startQueryService,
  withDatabase,
  type CommandResult,
  type FirehoseRecord,
  cancelOpenStreams,
} from './harness';

/**
 * Why this scenario: a log whose positions come from a sequence hands them out in allocation
 * order but makes them visible in commit order. Transaction A takes position 6, B…I take 7…14
 * and commit first; a reader that follows "position > last seen" reads 7…14, moves its
 * checkpoint to 14, and when A commits, 6 is below the checkpoint: lost for good, for the
 * projection and every watcher.
 *
 * The test forces exactly that interleaving by hand: one transaction takes the next position
 * (the way the command service does, by updating `event_log_head`), writes an evaluation and
 * its event, and stays open while commands arrive through the command service. It then checks
 * that the later commands wait for it rather than committing past it (pg_stat_activity /
 * pg_locks, not timing: the service's batch in flight waits on the lock, the rest behind it), and that after the commit the query side has every event, the manual
 * one included, in position order.
 */
describe('fault: a forced out-of-order commit', function () {
  this.timeout(120_000);
  let stack: PrivateStack;
  let commandService: RunningService | undefined;
  let queryService: RunningService | undefined;
  let clients: Clients | undefined;
  let firehose: FirehoseRecord | undefined;

  before(async () => {
    stack = await startPrivateStack();
    commandService = await startCommandService(stack.env);
    queryService = await startQueryService(stack.env);
    clients = createClients(commandService.address, queryService.address);
    firehose = recordFirehose(clients.query, { afterPosition: '0' });
    await firehose.whenCaughtUp();
  });

  after(async () => {
    cancelOpenStreams();
    firehose?.cancel();
    clients?.close();
    await queryService?.stop();
    await commandService?.stop();
    await stack?.close();
  });

  it('a position taken first and committed last is delivered, in order, to the projection and watchers', async () => {
    if (clients === undefined || firehose === undefined) throw new Error('set-up failed');
    const { command, query } = clients;
    for (let i = 0; i < 3; i += 1) {
      await runStep(command, `early-${i}`, 'submit');
      await runStep(command, `early-${i}`, 'start');
    }

    const manualId = 'manual-0';
    const monitor = await connect(stack.databaseUrl);
    const writer = await connect(stack.databaseUrl);
    try {
      const writerPid = Number((await writer.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid);
      await writer.query('BEGIN');
      const taken = await writer.query<{ position: string }>(
        'UPDATE event_log_head SET position = position + 1 WHERE id = 1 RETURNING position::text AS position',
      );
      const manualPosition = BigInt(taken.rows[0]?.position ?? '0');
      expect(manualPosition).to.equal(7n);
      await insertQueuedByHand(writer, manualId, manualPosition);

      // Later commands, from other connections, while the manual transaction is open.
      const later: Promise<CommandResult>[] = [];
      for (let i = 0; i < 3; i += 1) later.push(runStep(command, `early-${i}`, 'complete', { deadlineMs: 30_000 }));
      for (let i = 0; i < 5; i += 1) later.push(runStep(command, `late-${i}`, 'submit', { deadlineMs: 30_000 }));
      const settled = Promise.allSettled(later);

      // They queue behind the head-row lock instead of committing past position 7: the
      // service's batch in flight (group commit: one at a time) waits for the manual
      // transaction, and the commands that arrive meanwhile wait for that batch.
      await pollUntil("the command service's write waiting for the manual transaction", async () => {
        const { waiting, blockedByHolder } = await waitingCommands(monitor, writerPid);
        return waiting === 1 && blockedByHolder === 1;
      });
      const { rows: visible } = await monitor.query<{ max: string | null }>(
        'SELECT max(position)::text AS max FROM evaluation_events',
      );
      expect(visible[0]?.max, 'nothing after position 6 is visible while 7 is uncommitted').to.equal('6');

      await writer.query('COMMIT');
      const results = await settled;
      const positions = results.map((r) => {
        if (r.status === 'rejected') throw r.reason;
        return BigInt(r.value.position);
      });
      expect([...positions].sort((a, b) => (a < b ? -1 : 1))).to.deep.equal([8n, 9n, 10n, 11n, 12n, 13n, 14n, 15n]);
    } finally {
      await writer.query('ROLLBACK').catch(() => undefined);
      await writer.end();
      await monitor.end();
    }

    const log = await readEventLog(stack.databaseUrl);
    expect(log.map((e) => e.position)).to.deep.equal(Array.from({ length: 15 }, (_, i) => BigInt(i + 1)));
    await firehose.whenReached(15n);
    expectSameAsLog(firehose.updates, log);
    expect(firehose.updates.find((u) => u.position === '7')?.evaluation?.evalId).to.equal(manualId);

    const manual = await call(query, query.getEvaluation, { evalId: manualId, minPosition: '15' });
    expect(manual.evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_QUEUED);
    expect(manual.evaluation?.position).to.equal('7');
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
  });

  it('a position given back by a rolled-back transaction leaves no hole', async () => {
    if (clients === undefined || firehose === undefined) throw new Error('set-up failed');
    const { command } = clients;
    const before = await readEventLog(stack.databaseUrl);
    const head = before[before.length - 1]?.position ?? 0n;

    await withDatabase(stack.databaseUrl, async (monitor) => {
      await withDatabase(stack.databaseUrl, async (writer) => {
        const writerPid = Number((await writer.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid);
        await writer.query('BEGIN');
        await writer.query('UPDATE event_log_head SET position = position + 1 WHERE id = 1');
        await insertQueuedByHand(writer, 'rolled-back-0', head + 1n);
        const pending = runStep(command, 'after-rollback-0', 'submit', { deadlineMs: 30_000 });
        await pollUntil('the command waiting for the manual transaction', async () => {
          const { waiting, blockedByHolder } = await waitingCommands(monitor, writerPid);
          return waiting === 1 && blockedByHolder === 1;
        });
        await writer.query('ROLLBACK');
        expect((await pending).position, 'the command takes the position given back').to.equal(String(head + 1n));
      });
    });

    const log = await readEventLog(stack.databaseUrl);
    expect(log.map((e) => e.position)).to.deep.equal(Array.from({ length: Number(head) + 1 }, (_, i) => BigInt(i + 1)));
    await firehose.whenReached(head + 1n);
    expectSameAsLog(firehose.updates, log);
  });
});

/**
 * Command-service sessions waiting for a lock, and how many of them `holder` blocks directly
 * (the first waiter for a row waits for the holder; the others queue behind that waiter).
 */
async function waitingCommands(db: Client, holder: number): Promise<{ waiting: number; blockedByHolder: number }> {
  const { rows } = await db.query<{ waiting: string; blocked_by_holder: string }>(
    `SELECT count(*)::text AS waiting,
            count(*) FILTER (WHERE $1 = ANY (pg_blocking_pids(pid)))::text AS blocked_by_holder
       FROM pg_stat_activity
      WHERE application_name = 'crucible-command' AND wait_event_type = 'Lock'`,
    [holder],
  );
  return { waiting: Number(rows[0]?.waiting ?? 0), blockedByHolder: Number(rows[0]?.blocked_by_holder ?? 0) };
}

async function connect(databaseUrl: string): Promise<Client> {
  const client = new Client({ connectionString: databaseUrl, application_name: 'crucible-fault-test' });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** What SubmitEvaluation writes, done by hand: the evaluation's row and its first event at `position`. */
async function insertQueuedByHand(db: Client, evalId: string, position: bigint): Promise<void> {
  const code = `print(${JSON.stringify(evalId)})`;
  const codeHash = createHash('sha256').update(code).digest('hex');
  const now = new Date().toISOString();
  const metadata = { suite: 'by-hand' };
  await db.query(
    `INSERT INTO evaluations (eval_id, status, code_hash, code_size, language, engine, timeout_seconds,
                              metadata, created_at, updated_at, revision)
     VALUES ($1, 'queued', $2, $3, 'python', 'docker', 60, $4, $5, $5, 1)`,
    [evalId, codeHash, Buffer.byteLength(code), JSON.stringify(metadata), now],
  );
  const data = {
    codeHash,
    codeSize: Buffer.byteLength(code),
    language: 'python',
    engine: 'docker',
    timeoutSeconds: 60,
    metadata,
    createdAt: now,
  };
  await db.query(
    `INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, request_id, command_hash, recorded_at)
     VALUES ($1, $2, 1, 'EvaluationQueued', $3, NULL, $4, $5)`,
    [
      position.toString(),
      evalId,
      JSON.stringify(data),
      createHash('sha256').update(`by-hand:${evalId}`).digest('hex'),
      now,
    ],
  );
}
