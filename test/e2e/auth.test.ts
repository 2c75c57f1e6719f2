import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Client,
  credentials,
  Metadata,
  status,
  type ChannelCredentials,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { expect } from 'chai';
import { generateKeyPair, type CryptoKey } from 'jose';
import { METHOD_ROLES, ROLES, type Role } from '../../shared/auth';
import { EvaluationCommandServiceService } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationStatus, ExecutorStatus, FailureReason } from '../../shared/generated/crucible/storage/v1/evaluation';
import { EvaluationQueryServiceService } from '../../shared/generated/crucible/storage/v1/query_service';
import { RetryInfo } from '../../shared/generated/google/rpc/error_details';
import { Status as RpcStatus } from '../../shared/generated/google/rpc/status';
import { createTestAuthority, type TestAuthority } from '../support/certificates';
import { call, createClients, expectError, type Clients } from '../support/clients';
import { aSubmission } from '../support/requests';
import { startJwtDeployment, type JwtDeployment } from '../support/jwt-deployment';
import { waitForServing } from '../support/processes';
import { COMMAND_SERVICE, QUERY_SERVICE, startServices, type RunningServices } from '../support/services';

const identity = (bytes: Buffer): Buffer => bytes;

/** Every RPC of both services, with the address to call it at: the services' own definitions. */
function everyRpc(addresses: { command: string; query: string }) {
  const of = (definition: ServiceDefinition, address: string) =>
    Object.values(definition).map((method) => ({
      name: method.path.split('/')[2] as string,
      path: method.path,
      address,
      kind: method.requestStream ? 'client stream' : method.responseStream ? 'server stream' : 'unary',
    }));
  return [
    ...of(EvaluationCommandServiceService, addresses.command),
    ...of(EvaluationQueryServiceService, addresses.query),
  ];
}

/**
 * Calls `rpc` with an empty request (every field at its default) through a raw client and
 * resolves with its status: what the gate answers, whatever the handler would have said.
 */
function statusOf(
  client: Client,
  rpc: ReturnType<typeof everyRpc>[number],
  deadlineMs: number,
): Promise<ServiceError | 'OK'> {
  const soon = { deadline: Date.now() + deadlineMs };
  return new Promise((resolve) => {
    const done = (err: ServiceError | null): void => resolve(err ?? 'OK');
    const empty = Buffer.alloc(0);
    if (rpc.kind === 'unary') {
      client.makeUnaryRequest(rpc.path, identity, identity, empty, new Metadata(), soon, done);
    } else if (rpc.kind === 'client stream') {
      const stream = client.makeClientStreamRequest(rpc.path, identity, identity, new Metadata(), soon, done);
      stream.end();
    } else {
      const stream = client.makeServerStreamRequest(rpc.path, identity, identity, empty, new Metadata(), soon);
      stream.on('data', () => undefined);
      stream.on('error', (err: ServiceError) => resolve(err));
      stream.on('end', () => resolve('OK'));
    }
  });
}

/** The [rpc, code] pairs of calls that did not answer `expected`. */
async function unexpectedCodes(
  channel: ChannelCredentials,
  rpcs: ReturnType<typeof everyRpc>,
  expected: status,
  deadlineMs = 10_000,
): Promise<[string, string][]> {
  const clients = new Map<string, Client>();
  const wrong: [string, string][] = [];
  try {
    for (const rpc of rpcs) {
      let client = clients.get(rpc.address);
      if (client === undefined) {
        client = new Client(rpc.address, channel);
        clients.set(rpc.address, client);
      }
      const answer = await statusOf(client, rpc, deadlineMs);
      const code = answer === 'OK' ? 'OK' : status[answer.code];
      if (answer === 'OK' || answer.code !== expected) wrong.push([rpc.name, code ?? String(answer)]);
    }
  } finally {
    for (const client of clients.values()) client.close();
  }
  return wrong;
}

describe('e2e: who may call what (JWT over TLS)', function () {
  this.timeout(120_000);
  let deployment: JwtDeployment;
  let stranger: CryptoKey;
  let tls: ChannelCredentials;
  let services: RunningServices;

  const tokenOf = (subject: string, roles: Role[], key?: CryptoKey, expiresAt?: number): Promise<string> =>
    deployment.tokenOf(subject, roles, {
      ...(key !== undefined ? { key } : {}),
      ...(expiresAt !== undefined ? { expiresAt } : {}),
    });
  const channelOf = (token: string): ChannelCredentials => deployment.channelOf(token);
  const as = (subject: string, ...roles: Role[]): Promise<Clients> => deployment.clientsOf(subject, roles);

  before(async () => {
    deployment = await startJwtDeployment('auth');
    ({ services, tls } = deployment);
    stranger = (await generateKeyPair('ES256')).privateKey;
  });

  after(() => deployment?.close());

  const rpcs = () => everyRpc({ command: services.command.address, query: services.query.address });

  it('answers health checks without a credential, and nothing over plaintext', async () => {
    await waitForServing(services.command.address, COMMAND_SERVICE, 5_000, tls);
    await waitForServing(services.query.address, QUERY_SERVICE, 5_000, tls);
    const plaintext = createClients(services.command.address, services.query.address);
    try {
      const err = await expectError(call(plaintext.query, plaintext.query.getProjectionStatus, {}, 3_000));
      expect(err.code).to.be.oneOf([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);
    } finally {
      plaintext.close();
    }
  });

  it('refuses every RPC of both services without a credential, or with an expired or foreign one: UNAUTHENTICATED', async () => {
    expect(await unexpectedCodes(tls, rpcs(), status.UNAUTHENTICATED)).to.deep.equal([]);
    // Refused before its request is read: a body that is no protobuf is not even looked at.
    const raw = new Client(services.command.address, tls);
    try {
      const garbage = await new Promise<ServiceError | null>((resolve) =>
        raw.makeUnaryRequest(
          `/${COMMAND_SERVICE}/SubmitEvaluation`,
          identity,
          identity,
          Buffer.from([0x0a, 0x7f, 0x01]),
          new Metadata(),
          { deadline: Date.now() + 5_000 },
          resolve,
        ),
      );
      expect(garbage?.code).to.equal(status.UNAUTHENTICATED);
    } finally {
      raw.close();
    }
    const past = Math.floor(Date.now() / 1000) - 3600;
    const expired = channelOf(await tokenOf('api-1', ['api'], undefined, past));
    expect(await unexpectedCodes(expired, rpcs(), status.UNAUTHENTICATED)).to.deep.equal([]);
    const foreign = channelOf(await tokenOf('api-1', ['api'], stranger));
    expect(await unexpectedCodes(foreign, rpcs(), status.UNAUTHENTICATED)).to.deep.equal([]);
  });

  it('refuses every RPC a role may not call: PERMISSION_DENIED, per the roles table', async () => {
    for (const role of ROLES.filter((r) => r !== 'admin')) {
      const denied = rpcs().filter((rpc) => !(METHOD_ROLES[rpc.name] ?? []).includes(role));
      expect(denied.length, role).to.be.greaterThan(0);
      const channel = channelOf(await tokenOf(`${role}-1`, [role]));
      expect(await unexpectedCodes(channel, denied, status.PERMISSION_DENIED), role).to.deep.equal([]);
    }
    // And lets the rest through to their handlers: an empty request is then their INVALID_ARGUMENT,
    // an answer, or (a stream that waits for changes) the deadline.
    const api = channelOf(await tokenOf('api-1', ['api']));
    const allowed = rpcs().filter((rpc) => (METHOD_ROLES[rpc.name] ?? []).includes('api'));
    const codes = await unexpectedCodes(api, allowed, status.PERMISSION_DENIED, 1_000);
    expect(codes.map(([name]) => name).sort()).to.deep.equal(allowed.map((rpc) => rpc.name).sort());
    expect(codes.filter(([, code]) => code === 'UNAUTHENTICATED' || code === 'PERMISSION_DENIED')).to.deep.equal([]);
  });

  it('binds an evaluation to the executor that starts it: another executor is refused and writes nothing', async () => {
    const api = await as('api-1', 'api');
    const executor1 = await as('executor-1', 'executor');
    const executor2 = await as('executor-2', 'executor');
    try {
      const submitted = await call(api.command, api.command.submitEvaluation, aSubmission());
      const { evalId } = submitted;
      const start = { evalId, executorId: 'executor-2', containerId: 'c-1', requestId: '' };
      const posing = await expectError(call(executor1.command, executor1.command.startEvaluation, start));
      expect(posing.code).to.equal(status.PERMISSION_DENIED);
      expect(posing.details).to.include('executor_id executor-2 is not the caller');
      await call(executor1.command, executor1.command.startEvaluation, { ...start, executorId: 'executor-1' });

      const refusals: (() => Promise<unknown>)[] = [
        () =>
          call(executor2.command, executor2.command.completeEvaluation, {
            evalId,
            output: Buffer.from('forged'),
            exitCode: 0,
            requestId: '',
          }),
        () =>
          call(executor2.command, executor2.command.failEvaluation, {
            evalId,
            error: 'forged',
            exitCode: 1,
            reason: FailureReason.FAILURE_REASON_ERROR,
            requestId: '',
          }),
        () =>
          call(executor2.command, executor2.command.recordMetrics, {
            evalId,
            metrics: [{ name: 'score', value: 1, unit: '' }],
            requestId: '',
          }),
        () =>
          call(executor2.command, executor2.command.createOutputUpload, { evalId, size: '1', sha256: '0'.repeat(64) }),
        () =>
          call(executor2.command, executor2.command.reportExecutorHealth, {
            executorId: 'executor-1',
            status: ExecutorStatus.EXECUTOR_STATUS_HEALTHY,
            capacity: 1,
            running: 1,
            version: 'v',
            metrics: {},
          }),
      ];
      refusals.push(
        () =>
          new Promise((resolve, reject) => {
            const stream = executor2.command.completeEvaluationStream((err, response) =>
              err !== null ? reject(err) : resolve(response),
            );
            stream.write({ header: { evalId, exitCode: 0, outputSize: '6', requestId: '' } });
            stream.write({ outputChunk: Buffer.from('forged') });
            stream.end();
          }),
      );
      for (const refused of refusals) expect((await expectError(refused())).code).to.equal(status.PERMISSION_DENIED);

      const completed = await call(executor1.command, executor1.command.completeEvaluation, {
        evalId,
        output: Buffer.from('42'),
        exitCode: 0,
        requestId: '',
      });
      const got = await call(api.query, api.query.getEvaluation, { evalId, minPosition: completed.position });
      expect(got.evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_COMPLETED);
      const trail = await call(api.query, api.query.getEvaluationEvents, {
        evalId,
        afterRevision: '0',
        pageSize: 0,
        pageToken: '',
      });
      // Nothing of executor-2's: three events, each with who reported it.
      expect(trail.events.map((e) => [e.revision, e.reporter])).to.deep.equal([
        ['1', 'api-1'],
        ['2', 'executor-1'],
        ['3', 'executor-1'],
      ]);
    } finally {
      for (const clients of [api, executor1, executor2]) clients.close();
    }
  });

  it('logs each denial with identity, RPC and reason, and never a token', () => {
    const logs = services.command.logs() + services.query.logs();
    const denials = logs.split('\n').filter((line) => line.includes('"msg":"call denied"'));
    expect(denials.length).to.be.greaterThan(0);
    const executor2 = denials.find((line) => line.includes('"identity":"executor-2"'));
    expect(executor2).to.include('"code":"PERMISSION_DENIED"').and.include('bound to another executor');
    expect(deployment.tokens.length).to.be.greaterThan(5);
    for (const token of deployment.tokens) {
      // A token's signature alone is secret enough to look for, and cannot appear by chance.
      expect(logs.includes(token.split('.')[2] as string), 'a token reached the logs').to.equal(false);
    }
  });
});

describe('e2e: client certificates (mTLS) and per-identity limits', function () {
  this.timeout(120_000);
  let authority: TestAuthority;
  let dir: string;
  let services: RunningServices;

  const channelWith = (cert?: { cert: Buffer; key: Buffer }): ChannelCredentials =>
    cert === undefined ? credentials.createSsl(authority.ca) : credentials.createSsl(authority.ca, cert.key, cert.cert);

  before(async () => {
    authority = await createTestAuthority();
    dir = await mkdtemp(join(tmpdir(), 'crucible-e2e-mtls-'));
    const server = await authority.issue('server', 'IP:127.0.0.1,DNS:localhost');
    const identitiesFile = join(dir, 'identities.json');
    await writeFile(
      identitiesFile,
      JSON.stringify({
        'DNS:api.e2e.test': { subject: 'api-1', roles: ['api'], tenant: 'acme' },
        'DNS:executor-1.e2e.test': { subject: 'executor-1', roles: ['executor'], tenant: 'acme' },
      }),
    );
    const api = await authority.issue('api', 'DNS:api.e2e.test');
    services = await startServices({
      overrides: {
        AUTH_MODE: 'mtls',
        AUTH_MTLS_IDENTITIES_FILE: identitiesFile,
        TLS_CERT_FILE: server.certFile,
        TLS_KEY_FILE: server.keyFile,
        TLS_CLIENT_CA_FILE: authority.caFile,
        ALLOW_PLAINTEXT: 'false',
        // Small enough to reach in a test, large enough for the calls of the others.
        AUTH_REQUESTS_PER_SECOND: '1',
        AUTH_BURST: '20',
      },
      channel: channelWith(api),
    });
  });

  after(async () => {
    await services?.close();
    await authority?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('knows callers by their certificates: mapped ones by their roles, others refused', async () => {
    const executor = createClients(
      services.command.address,
      services.query.address,
      channelWith(await authority.issue('executor-1', 'DNS:executor-1.e2e.test')),
    );
    const unmapped = createClients(
      services.command.address,
      services.query.address,
      channelWith(await authority.issue('stranger', 'DNS:stranger.e2e.test')),
    );
    const anonymous = createClients(services.command.address, services.query.address, channelWith());
    try {
      const { command: api } = services.clients;
      const { evalId } = await call(api, api.submitEvaluation, aSubmission({ code: 'print(2)' }));
      await call(executor.command, executor.command.startEvaluation, {
        evalId,
        executorId: 'executor-1',
        containerId: 'c',
        requestId: '',
      });
      const denied = await expectError(call(executor.query, executor.query.getEvaluation, { evalId }));
      expect(denied.code).to.equal(status.PERMISSION_DENIED);
      const stranger = await expectError(call(unmapped.query, unmapped.query.getEvaluation, { evalId }));
      expect(stranger.code).to.equal(status.PERMISSION_DENIED);
      expect(stranger.details).to.include('DNS:stranger.e2e.test');
      // Without a certificate the TLS handshake itself fails: no call is made.
      const none = await expectError(call(anonymous.query, anonymous.query.getEvaluation, { evalId }, 3_000));
      expect(none.code).to.be.oneOf([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);
    } finally {
      for (const clients of [executor, unmapped, anonymous]) clients.close();
    }
  });

  it('holds an identity to its rate: RESOURCE_EXHAUSTED with RetryInfo, other identities unaffected', async () => {
    const limited = createClients(
      services.command.address,
      services.query.address,
      channelWith(await authority.issue('executor-1b', 'DNS:executor-1.e2e.test')),
    );
    try {
      let refused: ServiceError | undefined;
      for (let i = 0; i < 40 && refused === undefined; i += 1) {
        const answer = await call(limited.command, limited.command.reportExecutorHealth, {
          executorId: 'executor-1',
          status: ExecutorStatus.EXECUTOR_STATUS_HEALTHY,
          capacity: 1,
          running: 0,
          version: 'v',
          metrics: {},
        }).catch((err: ServiceError) => err);
        if (answer instanceof Error && answer.code === status.RESOURCE_EXHAUSTED) refused = answer;
      }
      expect(refused, 'the 21st call within a second is over the burst').not.to.equal(undefined);
      const raw = refused?.metadata.get('grpc-status-details-bin')[0] as Buffer;
      const detail = RpcStatus.decode(raw).details.find((d) => d.typeUrl.endsWith('google.rpc.RetryInfo'));
      const delay = RetryInfo.decode(detail?.value ?? Buffer.alloc(0)).retryDelay;
      expect(Number(delay?.seconds) * 1000 + (delay?.nanos ?? 0) / 1e6).to.be.within(1, 1000);
      // The API's identity has a bucket of its own.
      const { query } = services.clients;
      await call(query, query.getProjectionStatus, {});
    } finally {
      limited.close();
    }
  });
});
