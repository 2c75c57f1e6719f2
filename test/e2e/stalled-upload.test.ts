import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { Client } from 'pg';
import { call, createClients, type Clients } from '../support/clients';
import { createTestEnvironment, type TestEnvironment } from '../support/environment';
import { startService, type RunningService } from '../support/processes';

describe('e2e: a client stream that stalls is cut, and the evaluation is as before', function () {
  this.timeout(60_000);
  let environment: TestEnvironment;
  let commandService: RunningService | undefined;
  let clients: Clients;

  before(async () => {
    environment = await createTestEnvironment({ overrides: { CLIENT_STREAM_IDLE_MS: '500' } });
    commandService = await startService('command', environment.env);
    clients = createClients(commandService.address, commandService.address);
  });
  after(async () => {
    clients?.close();
    await commandService?.stop();
    await environment?.close();
  });

  it('CompleteEvaluationStream that sends nothing for CLIENT_STREAM_IDLE_MS is DEADLINE_EXCEEDED; the evaluation can still complete', async () => {
    const { command } = clients;
    const { evalId } = await call(command, command.submitEvaluation, {
      evalId: `stall-${Date.now()}`,
      code: 'print(1)',
      language: 'python',
      engine: 'docker',
      timeoutSeconds: 60,
      metadata: {},
      requestId: '',
    });
    await call(command, command.startEvaluation, { evalId, executorId: 'x', containerId: '', requestId: '' });
    const size = 2 * 1024 * 1024;
    const startedAt = Date.now();
    const cut = await new Promise<{ code: number; details: string }>((resolve) => {
      const stream = command.completeEvaluationStream((err) => resolve(err ?? { code: status.OK, details: '' }));
      stream.write({ header: { evalId, exitCode: 0, outputSize: String(size), requestId: '' } });
      stream.write({ outputChunk: Buffer.alloc(64 * 1024, 1) });
      // ... and then nothing: neither the rest nor the end.
    });
    expect(cut.code).to.equal(status.DEADLINE_EXCEEDED);
    expect(cut.details).to.contain('sent nothing for 500 ms');
    expect(Date.now() - startedAt).to.be.below(10_000);

    const sql = new Client({ connectionString: environment.config.databaseUrl });
    await sql.connect();
    try {
      const { rows } = await sql.query<{ status: string }>(`SELECT status FROM evaluations WHERE eval_id = $1`, [
        evalId,
      ]);
      expect(rows[0]?.status).to.equal('running');
    } finally {
      await sql.end();
    }
    const done = await new Promise<{ revision: string }>((resolve, reject) => {
      const stream = command.completeEvaluationStream((err, response) =>
        err !== null ? reject(err) : resolve(response),
      );
      stream.write({ header: { evalId, exitCode: 0, outputSize: '2', requestId: '' } });
      stream.write({ outputChunk: Buffer.from('ok') });
      stream.end();
    });
    expect(done.revision).to.equal('3');
  });
});
