import { chmodSync, chownSync, copyFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { Client } from 'pg';

import { createTestAuthority, type TestAuthority } from '../support/certificates';
import { call, createClients, type Clients } from '../support/clients';
import { freePort, startPrivateStack, type PrivateStack } from '../support/private-servers';
import { startService, waitForServing, type RunningService } from '../support/processes';
import { aSubmission } from '../support/requests';
import { QUERY_SERVICE } from '../support/services';

/** The ACL user the services log in to Redis as, over TLS. */
const REDIS_USER = 'crucible-tls';
const REDIS_PASSWORD = 'tls-e2e-secret';

/**
 * Both services on stores reached over TLS, as a managed deployment reaches them: PostgreSQL
 * with `sslmode=verify-full` (the server's certificate checked against a CA and its name), Redis
 * with `rediss://` and an ACL user's password, its plaintext port closed. The CA is the test's
 * own, given to `pg` as `sslrootcert` and to Node (ioredis) as NODE_EXTRA_CA_CERTS.
 */
describe('e2e: PostgreSQL and Redis over TLS', function () {
  this.timeout(120_000);
  let authority: TestAuthority;
  let stack: PrivateStack;
  let redisAdmin: Redis | undefined;
  let tlsPort: number;
  const services: RunningService[] = [];
  let clients: Clients | undefined;

  /** Turns on TLS in the private PostgreSQL: its certificate in the data folder, ssl on, a reload. */
  async function postgresOverTls(): Promise<void> {
    const server = await authority.issue('postgres', 'IP:127.0.0.1,DNS:localhost');
    const admin = new Client({ connectionString: stack.databaseUrl });
    await admin.connect();
    try {
      const { rows } = await admin.query<{ data_directory: string }>('SHOW data_directory');
      const dataDir = rows[0]?.data_directory ?? '';
      // The server runs as the data folder's owner, and takes a key only it may read.
      const { uid, gid } = statSync(dataDir);
      for (const [from, to] of [
        [server.certFile, 'server.crt'],
        [server.keyFile, 'server.key'],
      ] as const) {
        copyFileSync(from, join(dataDir, to));
        chownSync(join(dataDir, to), uid, gid);
        chmodSync(join(dataDir, to), 0o600);
      }
      await admin.query(`ALTER SYSTEM SET ssl = on`);
      await admin.query(`SELECT pg_reload_conf()`);
    } finally {
      await admin.end();
    }
  }

  /** Turns on TLS in the private Redis, adds the services' user, then closes the plaintext port. */
  async function redisOverTls(): Promise<void> {
    const server = await authority.issue('redis', 'IP:127.0.0.1,DNS:localhost');
    tlsPort = await freePort();
    const plain = new Redis(stack.redis.url, { maxRetriesPerRequest: 1 });
    try {
      await plain.config('SET', 'tls-cert-file', server.certFile, 'tls-key-file', server.keyFile);
      await plain.config('SET', 'tls-ca-cert-file', authority.caFile, 'tls-auth-clients', 'no');
      await plain.config('SET', 'tls-port', String(tlsPort));
      await plain.acl('SETUSER', REDIS_USER, 'on', `>${REDIS_PASSWORD}`, '~*', '&*', '+@all');
    } finally {
      plain.disconnect();
    }
    redisAdmin = new Redis(tlsUrl(), { maxRetriesPerRequest: 1, tls: { ca: authority.ca } });
    await redisAdmin.config('SET', 'port', '0');
  }

  const tlsUrl = (): string => `rediss://${REDIS_USER}:${REDIS_PASSWORD}@127.0.0.1:${tlsPort}/0`;

  before(async () => {
    authority = await createTestAuthority();
    stack = await startPrivateStack();
    await postgresOverTls();
    await redisOverTls();
    const env = {
      ...stack.env,
      DATABASE_URL: `${stack.databaseUrl}?sslmode=verify-full&sslrootcert=${encodeURIComponent(authority.caFile)}`,
      REDIS_URL: tlsUrl(),
      NODE_EXTRA_CA_CERTS: authority.caFile,
    };
    services.push(await startService('command', env));
    const query = await startService('query', env);
    services.push(query);
    await waitForServing(query.address, QUERY_SERVICE, 30_000);
    clients = createClients(services[0]?.address ?? '', query.address);
  });

  after(async () => {
    clients?.close();
    for (const service of services) await service.stop();
    redisAdmin?.disconnect();
    await stack?.close();
    await authority?.close();
  });

  it('runs an evaluation through both services, every session to either store encrypted', async () => {
    const { command, query } = clients as Clients;
    const { evalId } = await call(command, command.submitEvaluation, aSubmission());
    await call(command, command.startEvaluation, { evalId, executorId: 'x-1', containerId: 'c-1', requestId: '' });
    const done = await call(command, command.completeEvaluation, {
      evalId,
      output: Buffer.from('over tls'),
      exitCode: 0,
      requestId: '',
    });
    const read = await call(query, query.getEvaluation, { evalId, minPosition: done.position });
    expect(read.evaluation?.outputPreview.toString()).to.equal('over tls');

    // PostgreSQL says which sessions are encrypted; the services' are all of them.
    const admin = new Client({ connectionString: stack.databaseUrl });
    await admin.connect();
    try {
      const { rows } = await admin.query<{ application_name: string; ssl: boolean }>(
        `SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
          WHERE a.application_name IN ('crucible-command', 'crucible-query')`,
      );
      expect(new Set(rows.map((r) => r.application_name))).to.deep.equal(
        new Set(['crucible-command', 'crucible-query']),
      );
      expect(
        rows.filter((r) => !r.ssl),
        'unencrypted sessions',
      ).to.deep.equal([]);
    } finally {
      await admin.end();
    }
    // Redis has no plaintext port left: everything the services did went over TLS, as the user.
    expect(await (redisAdmin as Redis).config('GET', 'port')).to.deep.equal(['port', '0']);
    const users = await (redisAdmin as Redis).client('LIST');
    expect(String(users)).to.include(`user=${REDIS_USER}`);
  });
});
