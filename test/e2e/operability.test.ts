import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import type { WatchEvaluationResponse } from '../../shared/generated/crucible/storage/v1/query_service';
import { call, createClients, readStream } from '../support/clients';
import { createTestEnvironment, type TestEnvironment } from '../support/environment';
import { startService, waitForServing, type RunningService } from '../support/processes';

const run = promisify(execFile);
const ROOT = join(__dirname, '..', '..', '..');
const BUF = join(ROOT, 'node_modules', '.bin', 'buf');
const COMMAND = 'crucible.storage.v1.EvaluationCommandService';
const QUERY = 'crucible.storage.v1.EvaluationQueryService';

async function bufCurl(url: string, args: string[] = []): Promise<string> {
  const { stdout } = await run(BUF, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...args, url], {
    timeout: 30_000,
  });
  return stdout;
}

describe('e2e: operability (reflection, health, --help, config errors, shutdown)', function () {
  this.timeout(60_000);
  let environment: TestEnvironment;
  let commandService: RunningService;
  let queryService: RunningService;

  before(async () => {
    environment = await createTestEnvironment();
    commandService = await startService('command', environment.env);
    queryService = await startService('query', environment.env);
    await waitForServing(queryService.address, QUERY);
  });

  after(async () => {
    await queryService?.stop();
    await commandService?.stop();
    await environment?.close();
  });

  it('buf curl lists every RPC of both services through reflection alone', async () => {
    const commandMethods = (await bufCurl(`http://${commandService.address}`, ['--list-methods'])).trim().split('\n');
    expect(commandMethods).to.include.members(['grpc.health.v1.Health/Check', 'grpc.health.v1.Health/Watch']);
    expect(commandMethods.filter((m) => m.startsWith(COMMAND))).to.have.members(
      [
        'SubmitEvaluation',
        'StartEvaluation',
        'CompleteEvaluation',
        'CompleteEvaluationStream',
        'FailEvaluation',
        'CancelEvaluation',
        'RecordMetrics',
        'RecordSecurityEvent',
        'ReportExecutorHealth',
        'AppendLogs',
        'CreateOutputUpload',
      ].map((m) => `${COMMAND}/${m}`),
    );
    const queryMethods = (await bufCurl(`http://${queryService.address}`, ['--list-methods'])).trim().split('\n');
    expect(queryMethods.filter((m) => m.startsWith(QUERY))).to.have.members(
      [
        'GetEvaluation',
        'ListEvaluations',
        'CountEvaluations',
        'ReadOutput',
        'GetOutputUrl',
        'ReadLogs',
        'WatchEvaluation',
        'WatchEvaluations',
        'GetProjectionStatus',
        'GetEvaluationMetrics',
        'GetEvaluationEvents',
        'WaitEvaluation',
        'ListSecurityEvents',
        'ListExecutors',
        'GetQueueMetrics',
      ].map((m) => `${QUERY}/${m}`),
    );
  });

  it('buf curl calls a command and a query with a Struct field, resolved through reflection', async () => {
    const submitted = JSON.parse(
      await bufCurl(`http://${commandService.address}/${COMMAND}/SubmitEvaluation`, [
        '-d',
        JSON.stringify({
          code: 'print(1)',
          language: 'python',
          engine: 'docker',
          timeoutSeconds: 5,
          metadata: { via: 'buf' },
        }),
      ]),
    ) as { evalId: string; position: string };
    const got = JSON.parse(
      await bufCurl(`http://${queryService.address}/${QUERY}/GetEvaluation`, [
        '-d',
        JSON.stringify({ evalId: submitted.evalId, minPosition: submitted.position }),
      ]),
    ) as { evaluation: { status: string; metadata: unknown } };
    expect(got.evaluation.status).to.equal('EVALUATION_STATUS_QUEUED');
    expect(got.evaluation.metadata).to.deep.equal({ via: 'buf' });
  });

  it('health answers SERVING for "" and for each service name', async () => {
    for (const [service, address] of [
      ['', commandService.address],
      [COMMAND, commandService.address],
      ['', queryService.address],
      [QUERY, queryService.address],
    ] as const) {
      const answer = JSON.parse(
        await bufCurl(`http://${address}/grpc.health.v1.Health/Check`, ['-d', JSON.stringify({ service })]),
      ) as {
        status: string;
      };
      expect(answer.status, `${address} "${service}"`).to.equal('SERVING');
    }
  });

  it('--help prints every setting, and a bad setting exits 2 naming the key', async () => {
    const help = await run(process.execPath, [join(ROOT, 'dist', 'services', 'command', 'main.js'), '--help']);
    expect(help.stdout).to.contain('DATABASE_URL').and.to.contain('S3_CHECKSUM_MODE');
    const failure = await run(process.execPath, [join(ROOT, 'dist', 'services', 'query', 'main.js')], {
      env: {
        ...process.env,
        ENVIRONMENT: 'production',
        QUERY_PORT: 'many',
        DATABASE_URL: '',
        REDIS_URL: '',
        S3_BUCKET: '',
      },
    }).catch((err: { code: number; stderr: string }) => err);
    expect(failure).to.have.property('code', 2);
    const stderr = (failure as { stderr: string }).stderr;
    expect(stderr)
      .to.contain('QUERY_PORT')
      .and.to.contain('DATABASE_URL is required')
      .and.to.contain('S3_BUCKET is required');
  });

  it('SIGTERM ends open streams with UNAVAILABLE and the process exits 0', async () => {
    const ownQuery = await startService('query', environment.env);
    await waitForServing(ownQuery.address, QUERY);
    const clients = createClients(commandService.address, ownQuery.address);
    try {
      const submitted = await call(clients.command, clients.command.submitEvaluation, {
        evalId: '',
        code: 'while True: pass',
        language: 'python',
        engine: 'docker',
        timeoutSeconds: 5,
        requestId: '',
      });
      await call(clients.query, clients.query.getEvaluation, {
        evalId: submitted.evalId,
        minPosition: submitted.position,
      });
      const watch = readStream<WatchEvaluationResponse>(clients.query.watchEvaluation({ evalId: submitted.evalId }));
      const first = await watch.next();
      expect(first.update?.revision ?? first.caughtUp?.position).to.not.equal(undefined);
      const exitCode = await ownQuery.stop('SIGTERM');
      const error = await watch.finished;
      expect(error?.code).to.equal(status.UNAVAILABLE);
      expect(exitCode).to.equal(0);
    } finally {
      clients.close();
    }
  });
});
