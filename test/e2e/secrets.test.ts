import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { call, createClients, expectError, type Clients } from '../support/clients';
import { aSubmission } from '../support/requests';
import { createTestEnvironment, type TestEnvironment } from '../support/environment';
import { startService, waitForServing, type RunningService } from '../support/processes';
import { COMMAND_SERVICE, QUERY_SERVICE } from '../support/services';

const ROOT = join(__dirname, '..', '..', '..');
const MAINS = ['command', 'query'].map((kind) => join(ROOT, 'dist', 'services', kind, 'main.js'));

/** `url` with `password`: the test servers trust local connections, so any password is taken. */
function withPassword(url: string, password: string): string {
  const parsed = new URL(url);
  parsed.password = password;
  return parsed.toString();
}

/**
 * Passwords in the database URLs never reach a log line, an error, `--help`, or a refused
 * configuration's message, whatever the services go through meanwhile (a lifecycle, refused
 * calls, a stop). The tokens of the authenticated e2e run are searched for in test/e2e/auth.test.ts.
 */
describe('e2e: secrets stay out of logs, errors and --help', function () {
  this.timeout(60_000);
  const secrets = Array.from({ length: 3 }, () => `pw-${randomBytes(12).toString('hex')}`);
  let environment: TestEnvironment;
  let env: Record<string, string>;
  let command: RunningService;
  let query: RunningService;
  let clients: Clients;
  let stopped = false;

  before(async () => {
    environment = await createTestEnvironment();
    const [writer, reader, owner] = secrets as [string, string, string];
    env = {
      ...environment.env,
      DATABASE_URL: withPassword(environment.env.DATABASE_URL as string, writer),
      QUERY_DATABASE_URL: withPassword(environment.env.QUERY_DATABASE_URL as string, reader),
      MIGRATION_DATABASE_URL: withPassword(environment.env.MIGRATION_DATABASE_URL as string, owner),
      LOG_LEVEL: 'debug',
    };
    command = await startService('command', env);
    query = await startService('query', env);
    await waitForServing(query.address, QUERY_SERVICE);
    await waitForServing(command.address, COMMAND_SERVICE);
    clients = createClients(command.address, query.address);
  });

  after(async () => {
    clients?.close();
    if (!stopped) {
      await query?.stop();
      await command?.stop();
    }
    await environment?.close();
  });

  it('keeps them out of everything the services say through a lifecycle, refusals and a stop', async () => {
    const { command: c, query: q } = clients;
    const { evalId } = await call(c, c.submitEvaluation, aSubmission());
    await call(c, c.startEvaluation, { evalId, executorId: 'x-1', containerId: 'c-1', requestId: '' });
    const done = await call(c, c.completeEvaluation, { evalId, output: Buffer.from('ok'), exitCode: 0, requestId: '' });
    expect((await call(q, q.getEvaluation, { evalId, minPosition: done.position })).evaluation?.evalId).to.equal(
      evalId,
    );
    const refused = await expectError(
      call(c, c.startEvaluation, { evalId, executorId: '', containerId: '', requestId: '' }),
    );
    expect(refused.code).to.equal(status.INVALID_ARGUMENT);
    expect((await expectError(call(q, q.getEvaluation, { evalId: 'missing' }))).code).to.equal(status.NOT_FOUND);
    stopped = true;
    await query.stop();
    await command.stop();
    const said = command.logs() + query.logs();
    expect(said).to.include('"msg":"listening"');
    for (const secret of secrets) expect(said.includes(secret), 'a password reached the logs').to.equal(false);
  });

  it('keeps them out of --help and of the message of a refused configuration', () => {
    const [secret] = secrets as [string];
    for (const main of MAINS) {
      const help = spawnSync(process.execPath, [main, '--help'], { encoding: 'utf8', env: { ...process.env, ...env } });
      expect(help.status).to.equal(0);
      expect(help.stdout + help.stderr)
        .to.include('DATABASE_URL')
        .and.not.include(secret);
      const refused = spawnSync(process.execPath, [main], {
        encoding: 'utf8',
        env: { ...process.env, ...env, DATABASE_URL: `mysql://app:${secret}@db.internal/x`, COMMAND_PORT: 'x' },
      });
      expect(refused.status).to.equal(2);
      expect(refused.stderr).to.include('DATABASE_URL must start with postgres://').and.include('app:***@');
      expect(refused.stdout + refused.stderr).not.to.include(secret);
    }
  });
});
