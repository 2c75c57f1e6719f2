import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createPublicKey } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import {
  createAuthenticator,
  createGate,
  createIdentityLimiter,
  METHOD_ROLES,
  mayCall,
  type Caller,
  type Role,
} from '../../../shared/auth';
import { createJwtVerifier } from '../../../shared/auth/jwt';
import { createCertificateIdentities, readIdentityMap } from '../../../shared/auth/mtls';
import { PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError } from '../../../shared/errors';
import { EvaluationCommandServiceService } from '../../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationQueryServiceService } from '../../../shared/generated/crucible/storage/v1/query_service';
import { createLogger, type LogFields } from '../../../shared/logging';

const ISSUER = 'https://auth.test';
const AUDIENCE = 'crucible-storage';

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  return expect.fail('expected a rejection');
}

/** A token of executor-1 in tenant acme, valid for 5 minutes: `claims` override any of that. */
function token(key: CryptoKey, claims: JWTPayload, options: { alg?: string; kid?: string } = {}) {
  const header = { alg: options.alg ?? 'ES256', ...(options.kid !== undefined ? { kid: options.kid } : {}) };
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    roles: ['executor'],
    tenant: 'acme',
    iss: ISSUER,
    aud: AUDIENCE,
    sub: 'executor-1',
    iat: now,
    exp: now + 300,
    ...claims,
  })
    .setProtectedHeader(header)
    .sign(key);
}

describe('auth', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'crucible-auth-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  describe('the roles table', () => {
    it('names every RPC of both services, and nothing else', () => {
      const rpcs = [
        ...Object.values(EvaluationCommandServiceService).map((m) => m.path.split('/')[2]),
        ...Object.values(EvaluationQueryServiceService).map((m) => m.path.split('/')[2]),
      ];
      expect(new Set(rpcs).size, 'RPC names are unique across the services').to.equal(rpcs.length);
      expect(Object.keys(METHOD_ROLES).sort()).to.deep.equal([...rpcs].sort());
    });

    it('lets the API submit, cancel and query; executors report; readers query; admins do everything', () => {
      const caller = (...roles: Role[]): Caller => ({ subject: 's', tenant: 't', roles: new Set(roles) });
      expect(mayCall(caller('api'), 'SubmitEvaluation')).to.equal(true);
      expect(mayCall(caller('api'), 'CancelEvaluation')).to.equal(true);
      expect(mayCall(caller('api'), 'CompleteEvaluation')).to.equal(false);
      expect(mayCall(caller('api'), 'ReadLogs')).to.equal(true);
      expect(mayCall(caller('executor'), 'StartEvaluation')).to.equal(true);
      expect(mayCall(caller('executor'), 'AppendLogs')).to.equal(true);
      expect(mayCall(caller('executor'), 'SubmitEvaluation')).to.equal(false);
      expect(mayCall(caller('executor'), 'GetEvaluation')).to.equal(false);
      expect(mayCall(caller('reader'), 'WatchEvaluations')).to.equal(true);
      expect(mayCall(caller('reader'), 'CancelEvaluation')).to.equal(false);
      expect(mayCall(caller('admin'), 'FailEvaluation')).to.equal(true);
      expect(mayCall(caller(), 'GetEvaluation')).to.equal(false);
      expect(mayCall(caller('api'), 'SomeFutureRpc'), 'an RPC missing from the table is for admins').to.equal(false);
    });
  });

  describe('JWT bearer tokens', () => {
    let signing: CryptoKey;
    let other: CryptoKey;
    let keysFile: string;
    const settings = () => ({
      keysFile,
      issuer: ISSUER,
      audience: AUDIENCE,
      rolesClaim: 'roles',
      tenantClaim: 'tenant',
    });

    before(async () => {
      const pair = await generateKeyPair('ES256', { extractable: true });
      signing = pair.privateKey;
      other = (await generateKeyPair('ES256')).privateKey;
      keysFile = join(dir, 'jwks.json');
      await writeFile(keysFile, JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1' }] }));
    });

    it('names the caller of a valid token: subject, tenant and the known roles', async () => {
      const verifier = await createJwtVerifier(settings());
      const caller = await verifier.verify(await token(signing, { roles: ['executor', 'viewer'] }, { kid: 'k1' }));
      expect(caller.subject).to.equal('executor-1');
      expect(caller.tenant).to.equal('acme');
      expect([...caller.roles]).to.deep.equal(['executor']);
    });

    it('refuses expired, foreign, wrongly signed and unsigned tokens as UNAUTHENTICATED, saying why', async () => {
      const verifier = await createJwtVerifier(settings());
      const cases: [string, Promise<string>][] = [
        ['expired', token(signing, { exp: Math.floor(Date.now() / 1000) - 3600 }, { kid: 'k1' })],
        ['claim "iss"', token(signing, { iss: 'https://evil' }, { kid: 'k1' })],
        ['claim "aud"', token(signing, { aud: 'someone-else' }, { kid: 'k1' })],
        ['signature does not verify', token(other, {}, { kid: 'k1' })],
        ['signed by no configured key', token(other, {}, { kid: 'unknown' })],
        ['malformed', Promise.resolve('not.a.token')],
        [
          'algorithm not allowed',
          Promise.resolve(
            `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"s"}').toString('base64url')}.`,
          ),
        ],
      ];
      for (const [reason, pending] of cases) {
        const err = await rejection(verifier.verify(await pending));
        expect(err, reason).to.be.instanceOf(UnauthenticatedError);
        expect(err.message, reason).to.include(reason);
      }
    });

    it('requires a tenant (UNAUTHENTICATED) and some role (PERMISSION_DENIED)', async () => {
      const verifier = await createJwtVerifier(settings());
      const noTenant = await rejection(verifier.verify(await token(signing, { tenant: undefined }, { kid: 'k1' })));
      expect(noTenant).to.be.instanceOf(UnauthenticatedError);
      expect(noTenant.message).to.include('"tenant"');
      const noRole = await rejection(verifier.verify(await token(signing, { roles: ['viewer'] }, { kid: 'k1' })));
      expect(noRole).to.be.instanceOf(PermissionDeniedError);
    });

    it('reads PEM keys too, trying each during a rotation, and takes a new key on reload', async () => {
      const old = await generateKeyPair('ES256', { extractable: true });
      const next = await generateKeyPair('ES256', { extractable: true });
      const pemFile = join(dir, 'keys.pem');
      await writeFile(pemFile, await exportSPKI(old.publicKey));
      const verifier = await createJwtVerifier({ ...settings(), keysFile: pemFile });
      expect((await verifier.verify(await token(old.privateKey, {}))).subject).to.equal('executor-1');
      expect(await rejection(verifier.verify(await token(next.privateKey, {})))).to.be.instanceOf(UnauthenticatedError);
      // The rotation: both keys published, tokens of either verify, without a kid.
      await writeFile(pemFile, `${await exportSPKI(old.publicKey)}\n${await exportSPKI(next.publicKey)}`);
      await verifier.reload();
      expect((await verifier.verify(await token(next.privateKey, {}))).subject).to.equal('executor-1');
      expect((await verifier.verify(await token(old.privateKey, { sub: 'other' }))).subject).to.equal('other');
    });

    it('refuses a keys file that holds a private key, or nothing usable, naming the setting', async () => {
      const pair = await generateKeyPair('ES256', { extractable: true });
      const privateFile = join(dir, 'private.json');
      await writeFile(privateFile, JSON.stringify({ keys: [await exportJWK(pair.privateKey)] }));
      const err = await rejection(createJwtVerifier({ ...settings(), keysFile: privateFile }));
      expect(err.message).to.include('AUTH_JWT_KEYS_FILE').and.include('private or secret key');
      const missing = await rejection(createJwtVerifier({ ...settings(), keysFile: join(dir, 'nothing') }));
      expect(missing.message).to.include('AUTH_JWT_KEYS_FILE').and.include('cannot be read');
      expect(createPublicKey(await exportSPKI(pair.publicKey)).type).to.equal('public');
    });
  });

  describe('client certificates', () => {
    it('maps a SAN to its caller, refusing a certificate without a mapped name or none at all', async () => {
      const file = join(dir, 'identities.json');
      await writeFile(
        file,
        JSON.stringify({
          'DNS:executor-1.example': { subject: 'executor-1', roles: ['executor'], tenant: 'acme' },
          'URI:spiffe://example/api': { roles: ['api'], tenant: 'acme' },
        }),
      );
      const identities = await createCertificateIdentities(file);
      const cert = (san: string) => ({ subjectaltname: san }) as PeerCertificate;
      expect(identities.callerOf(cert('DNS:other.example, DNS:executor-1.example')).subject).to.equal('executor-1');
      expect(identities.callerOf(cert('URI:spiffe://example/api')).subject).to.equal('spiffe://example/api');
      expect(() => identities.callerOf(cert('DNS:stranger.example'))).to.throw(PermissionDeniedError, 'stranger');
      expect(() => identities.callerOf(undefined)).to.throw(UnauthenticatedError, 'client certificate');
    });

    it('refuses an identities file with an unknown role or a bad tenant, naming the entry', async () => {
      const file = join(dir, 'bad-identities.json');
      await writeFile(file, JSON.stringify({ 'DNS:x': { roles: ['root'], tenant: 'acme' } }));
      expect((await rejection(readIdentityMap(file))).message)
        .to.include('"DNS:x"')
        .and.include('"roles"');
      await writeFile(file, JSON.stringify({ 'DNS:x': { roles: ['api'], tenant: 'a b' } }));
      expect((await rejection(readIdentityMap(file))).message).to.include('"tenant"');
    });
  });

  describe('the gate', () => {
    let signing: CryptoKey;
    let keysFile: string;
    before(async () => {
      const pair = await generateKeyPair('EdDSA', { extractable: true });
      signing = pair.privateKey;
      keysFile = join(dir, 'gate-keys.json');
      await writeFile(keysFile, JSON.stringify({ keys: [await exportJWK(pair.publicKey)] }));
    });

    async function gateWith(limits = { requestsPerSecond: 0, burst: 1, maxStreams: 0 }, now = () => 0) {
      const lines: LogFields[] = [];
      const logger = createLogger('warn', {}, (line) => lines.push(JSON.parse(line) as LogFields));
      const authenticator = await createAuthenticator({
        mode: 'jwt',
        keysFile,
        issuer: ISSUER,
        audience: AUDIENCE,
        rolesClaim: 'roles',
        tenantClaim: 'tenant',
      });
      return { gate: createGate({ authenticator, limits, logger, now }), lines };
    }
    const credentials = (authorization?: string) => {
      const metadata = new Metadata();
      if (authorization !== undefined) metadata.set('authorization', authorization);
      return { metadata, certificate: undefined, peer: 'ipv4:127.0.0.1:5000' };
    };

    it('refuses a call without a credential or with a malformed header, and a role that may not call, logging without the token', async () => {
      const { gate, lines } = await gateWith();
      const bearer = `Bearer ${await token(signing, {}, { alg: 'EdDSA' })}`;
      expect(await rejection(gate.admit('StartEvaluation', credentials(), 'unary'))).to.be.instanceOf(
        UnauthenticatedError,
      );
      expect(await rejection(gate.admit('StartEvaluation', credentials('Basic abc'), 'unary'))).to.be.instanceOf(
        UnauthenticatedError,
      );
      const denied = await rejection(gate.admit('SubmitEvaluation', credentials(bearer), 'unary'));
      expect(denied).to.be.instanceOf(PermissionDeniedError);
      expect(denied.message).to.equal('executor-1 (roles: executor) may not call SubmitEvaluation');
      expect((await gate.admit('StartEvaluation', credentials(bearer), 'unary')).caller.subject).to.equal('executor-1');
      expect(Object.fromEntries(gate.denials)).to.deep.equal({ UNAUTHENTICATED: 2, PERMISSION_DENIED: 1 });
      expect(lines.map((l) => [l.msg, l.method, l.identity, l.code])).to.deep.equal([
        ['call denied', 'StartEvaluation', 'unknown', 'UNAUTHENTICATED'],
        ['call denied', 'StartEvaluation', 'unknown', 'UNAUTHENTICATED'],
        ['call denied', 'SubmitEvaluation', 'executor-1', 'PERMISSION_DENIED'],
      ]);
      expect(JSON.stringify(lines)).not.to.include(bearer.slice(7));
    });

    it('holds each identity to its rate and its open streams, saying when to retry', async () => {
      let now = 0;
      const { gate } = await gateWith({ requestsPerSecond: 10, burst: 2, maxStreams: 1 }, () => now);
      const bearer = credentials(`Bearer ${await token(signing, {}, { alg: 'EdDSA' })}`);
      const other = credentials(`Bearer ${await token(signing, { sub: 'executor-2' }, { alg: 'EdDSA' })}`);
      await gate.admit('RecordMetrics', bearer, 'unary');
      const stream = await gate.admit('AppendLogs', bearer, 'stream');
      const limited = await rejection(gate.admit('RecordMetrics', bearer, 'unary'));
      expect(limited).to.be.instanceOf(ResourceExhaustedError);
      expect((limited as ResourceExhaustedError).retryAfterMs).to.equal(100);
      await gate.admit('RecordMetrics', other, 'unary'); // another identity has its own bucket
      now += 100;
      const streams = await rejection(gate.admit('AppendLogs', bearer, 'stream'));
      expect(streams).to.be.instanceOf(ResourceExhaustedError);
      expect(streams.message).to.include('AUTH_MAX_STREAMS');
      stream.release();
      now += 100;
      (await gate.admit('AppendLogs', bearer, 'stream')).release();
    });
  });

  describe('the identity limiter', () => {
    it('refills at its rate up to its burst, and forgets nothing that is not at rest', () => {
      let now = 0;
      const limiter = createIdentityLimiter({ requestsPerSecond: 1000, burst: 3, maxStreams: 0 }, () => now);
      expect([limiter.takeCall('a'), limiter.takeCall('a'), limiter.takeCall('a')]).to.deep.equal([
        undefined,
        undefined,
        undefined,
      ]);
      expect(limiter.takeCall('a')).to.equal(1);
      now += 10_000;
      expect([
        limiter.takeCall('a'),
        limiter.takeCall('a'),
        limiter.takeCall('a'),
        limiter.takeCall('a'),
      ]).to.deep.equal([undefined, undefined, undefined, 1]);
      const release = limiter.openStream('a');
      expect(release).to.be.a('function');
    });
  });
});
