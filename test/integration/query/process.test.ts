import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { expect } from 'chai';
import { EvaluationQueryServiceClient } from '../../../shared/generated/crucible/storage/v1/query_service';
import { QUERY_SERVICE_NAME } from '../../../services/query/server';
import { call } from '../../support/clients';
import { startService, waitForServing } from '../../support/processes';
import { createQueryHarness, type QueryHarness } from './harness';

const MAIN = join(__dirname, '..', '..', '..', 'services', 'query', 'main.js');

describe('query service process (main.ts)', function () {
  this.timeout(60_000);
  let h: QueryHarness;

  before(async () => {
    h = await createQueryHarness();
  });
  after(async () => {
    await h.close();
  });

  it('prints its configuration keys with --help, and exits 2 listing every configuration problem', () => {
    const help = spawnSync(process.execPath, [MAIN, '--help'], { encoding: 'utf8' });
    expect(help.status).to.equal(0);
    expect(help.stdout).to.contain('QUERY_DATABASE_URL').and.to.contain('READ_MODEL_PARTITIONS');
    const bad = spawnSync(process.execPath, [MAIN], {
      encoding: 'utf8',
      env: { ...process.env, ENVIRONMENT: 'test', QUERY_PORT: 'x', READ_MODEL_PARTITIONS: '0' },
    });
    expect(bad.status).to.equal(2);
    expect(bad.stderr).to.contain('QUERY_PORT').and.to.contain('READ_MODEL_PARTITIONS');
  });

  it('serves once caught up, and exits 0 on SIGTERM', async () => {
    const written = await h.writer.submit('proc-1');
    const service = await startService('query', h.env.env);
    const client = new EvaluationQueryServiceClient(service.address, credentials.createInsecure());
    try {
      await waitForServing(service.address, QUERY_SERVICE_NAME);
      const { evaluation } = await call(client, client.getEvaluation, {
        evalId: 'proc-1',
        minPosition: written.position,
      });
      expect(evaluation?.position).to.equal(written.position);
      const live = await h.writer.start('proc-1', { publish: true });
      const after = await call(client, client.getEvaluation, { evalId: 'proc-1', minPosition: live.position });
      expect(after.evaluation?.revision).to.equal('2');
    } finally {
      client.close();
      expect(await service.stop('SIGTERM')).to.equal(0);
    }
    const lines = service
      .logs()
      .split('\n')
      .filter((l) => l.includes('"msg":"listening"'));
    expect(lines).to.have.length(1);
  });
});
