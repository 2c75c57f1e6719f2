import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { EvaluationStatus, type Evaluation } from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  OutputKind,
  type ReadOutputResponse,
  type EvaluationQueryServiceClient,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { call, createClients, readBytes, type Clients } from '../support/clients';
import { aSubmission } from '../support/requests';
import { createTestEnvironment, type TestEnvironment } from '../support/environment';
import { startService, waitForServing, type RunningService } from '../support/processes';
import { QUERY_SERVICE, startServices, type RunningServices } from '../support/services';

const run = promisify(execFile);

/** Above CODE_INLINE_MAX_BYTES and the inline output limit: kept in S3, its row holding the key. */
const LARGE = Buffer.alloc(300 * 1024, 'restored bytes ');

/** Everything the query service answers about the evaluations, read the same way from both systems. */
async function answers(query: EvaluationQueryServiceClient, evalIds: readonly string[]): Promise<unknown> {
  const evaluations: (Evaluation | undefined)[] = [];
  const events: unknown[] = [];
  for (const evalId of evalIds) {
    evaluations.push((await call(query, query.getEvaluation, { evalId })).evaluation);
    events.push(
      (await call(query, query.getEvaluationEvents, { evalId, afterRevision: '0', pageSize: 100, pageToken: '' }))
        .events,
    );
  }
  const listed: string[] = [];
  let pageToken = '';
  do {
    const page = await call(query, query.listEvaluations, {
      status: EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED,
      pageSize: 7,
      pageToken,
    });
    listed.push(...page.evaluations.map((e) => `${e.evalId}@${e.revision}`));
    pageToken = page.nextPageToken;
  } while (pageToken !== '');
  const counts: Record<string, string> = {};
  for (const status of [EvaluationStatus.EVALUATION_STATUS_QUEUED, EvaluationStatus.EVALUATION_STATUS_COMPLETED]) {
    counts[status] = (
      await call(query, query.countEvaluations, {
        filter: { statuses: [status], language: '', engine: '', executorId: '', metadata: {} },
      })
    ).count;
  }
  const metrics = await call(query, query.getEvaluationMetrics, {
    evalId: 'kept-0',
    names: [],
    pageSize: 100,
    pageToken: '',
  });
  return {
    evaluations,
    events,
    listed,
    counts,
    metrics: metrics.metrics,
    output: await readOutput(query, 'kept-0', OutputKind.OUTPUT_KIND_OUTPUT),
    code: await readOutput(query, 'kept-1', OutputKind.OUTPUT_KIND_CODE),
  };
}

async function readOutput(query: EvaluationQueryServiceClient, evalId: string, kind: OutputKind): Promise<string> {
  const bytes = await readBytes(
    query.readOutput({ evalId, kind, offset: '0', length: '0' }),
    (message: ReadOutputResponse) => message.chunk,
  );
  return `${bytes.length} bytes, ${bytes.subarray(0, 32).toString('hex')}`;
}

describe('e2e: backup and restore (docs/operations.md): a pg_dump restored beside an empty Redis answers the same', function () {
  this.timeout(120_000);
  let original: RunningServices;
  let restoredEnvironment: TestEnvironment | undefined;
  let restored: RunningService | undefined;
  let restoredCommand: RunningService | undefined;
  let restoredClients: Clients | undefined;
  const dumpDir = mkdtempSync(join(tmpdir(), 'crucible-backup-'));

  before(async () => {
    original = await startServices();
  });
  after(async () => {
    restoredClients?.close();
    await restored?.stop();
    await restoredCommand?.stop();
    await restoredEnvironment?.close();
    await original?.close();
    rmSync(dumpDir, { recursive: true, force: true });
  });

  it('restores every evaluation, event, list, count, metric and body, and goes on at the next position', async () => {
    const { command, query } = original.clients;
    const evalIds: string[] = [];
    let last = '0';
    for (let i = 0; i < 12; i += 1) {
      const evalId = `kept-${i}`;
      evalIds.push(evalId);
      const code = i === 1 ? LARGE.toString('latin1') : `print(${i})`;
      last = (
        await call(command, command.submitEvaluation, aSubmission({ evalId, code, metadata: { suite: 'backup' } }))
      ).position;
      if (i % 4 === 3) continue; // left queued
      last = (
        await call(command, command.startEvaluation, { evalId, executorId: 'exec-1', containerId: 'c', requestId: '' })
      ).position;
      if (i === 0) {
        await call(command, command.recordMetrics, {
          evalId,
          metrics: [
            { name: 'loss', value: 0.5, unit: '', step: '1' },
            { name: 'loss', value: 0.25, unit: '', step: '2' },
          ],
          requestId: '',
        });
      }
      if (i % 4 === 2) continue; // left running
      last =
        i % 4 === 1
          ? (await call(command, command.cancelEvaluation, { evalId, reason: 'restore test', requestId: '' })).position
          : (
              await call(command, command.completeEvaluation, {
                evalId,
                exitCode: 0,
                output: i === 0 ? LARGE : Buffer.from(`out ${i}`),
                requestId: '',
              })
            ).position;
    }
    await call(query, query.getEvaluation, { evalId: 'kept-0', minPosition: last });
    const before = await answers(query, evalIds);

    // The backup: PostgreSQL only (S3 is kept, or restored from its own backup; Redis is derived).
    const dump = join(dumpDir, 'crucible.dump');
    await run('pg_dump', ['--format=custom', `--file=${dump}`, original.environment.config.databaseUrl]);

    // The restore: an empty database (migrated, as a fresh deployment's is) and a Redis prefix nobody used.
    restoredEnvironment = await createTestEnvironment({
      overrides: { S3_BUCKET: original.environment.config.s3.bucket },
    });
    await run('pg_restore', [
      '--clean',
      '--if-exists',
      '--single-transaction',
      `--dbname=${restoredEnvironment.config.databaseUrl}`,
      dump,
    ]);
    restoredCommand = await startService('command', restoredEnvironment.env);
    restored = await startService('query', restoredEnvironment.env);
    // SERVING once the read models are rebuilt from the restored log.
    await waitForServing(restored.address, QUERY_SERVICE);
    restoredClients = createClients(restoredCommand.address, restored.address);
    expect(await answers(restoredClients.query, evalIds)).to.deep.equal(before);

    // The restored system takes commands at the next position of the same log.
    const next = await call(
      restoredClients.command,
      restoredClients.command.submitEvaluation,
      aSubmission({ evalId: 'after-restore' }),
    );
    expect(BigInt(next.position)).to.equal(BigInt(last) + 1n);
  });
});
