import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { call, expectError, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import {
  expectReadModelsEqualLog,
  QUERY_SERVICE,
  readEventLog,
  recordHealth,
  runBurst,
  startFaultStack,
  waitForProjection,
  withDatabase,
  type FaultStack,
  type HealthRecord,
} from './harness';

const run = promisify(execFile);

/** The URL of another database on the same server. */
function databaseNamed(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

describe('fault: the event log goes backwards under live read models (PostgreSQL restored from a backup)', function () {
  this.timeout(240_000);
  let f: FaultStack;
  let health: HealthRecord | undefined;
  const dumpDir = mkdtempSync(join(tmpdir(), 'crucible-backup-'));

  before(async () => {
    f = await startFaultStack();
  });

  after(async () => {
    health?.close();
    await f?.close();
    rmSync(dumpDir, { recursive: true, force: true });
  });

  it('notices the reused positions, stops serving, rebuilds from the restored log and serves its truth', async () => {
    const { stack } = f;
    const [clients] = f.clients as [Clients];
    const [queryService] = f.replicas as [RunningService];
    await runBurst(clients.command, 'kept', 150);
    const backup = join(dumpDir, 'crucible.dump');
    await run('pg_dump', ['--format=custom', `--file=${backup}`, stack.databaseUrl]);
    const atBackup = await readEventLog(stack.databaseUrl);

    // Commits after the backup: the query side projects them, then they are lost.
    await runBurst(clients.command, 'lost', 150);
    const beforeRestore = await readEventLog(stack.databaseUrl);
    await waitForProjection(clients.query, beforeRestore[beforeRestore.length - 1]?.position ?? 0n);
    health = recordHealth(queryService.address, QUERY_SERVICE);
    await health.whenStatus('SERVING', 0);
    const seen = health.statuses.length;

    const name = new URL(stack.databaseUrl).pathname.slice(1);
    await f.restartCommand({
      meanwhile: async () => {
        await withDatabase(databaseNamed(stack.databaseUrl, 'postgres'), async (admin) => {
          await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
          await admin.query(`CREATE DATABASE ${name}`);
        });
        await run('pg_restore', ['--exit-on-error', `--dbname=${stack.databaseUrl}`, backup]);
        expect((await readEventLog(stack.databaseUrl)).length).to.equal(atBackup.length);
      },
    });

    // New commands take the positions the lost ones had (the command service is back on its port).
    await runBurst(clients.command, 'after', 60);
    const restored = await readEventLog(stack.databaseUrl);
    const head = restored[restored.length - 1]?.position ?? 0n;
    expect(head > BigInt(atBackup.length)).to.equal(true);

    await health.whenStatus('NOT_SERVING', seen, 60_000);
    await health.whenStatus('SERVING', health.statuses.indexOf('NOT_SERVING', seen) + 1, 60_000);
    await waitForProjection(clients.query, head);
    // What was lost with the backup is not served any more: NOT_FOUND is the truth now.
    const lost = await expectError(call(clients.query, clients.query.getEvaluation, { evalId: 'lost-0' }));
    expect(lost.code).to.equal(grpcStatus.NOT_FOUND);
    const { evaluation } = await call(clients.query, clients.query.getEvaluation, { evalId: 'after-0' });
    expect(evaluation?.evalId).to.equal('after-0');
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
  });
});
