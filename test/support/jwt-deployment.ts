import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata, type ChannelCredentials } from '@grpc/grpc-js';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import type { Role } from '../../shared/auth';
import { createTestAuthority, type TestAuthority } from './certificates';
import { createClients, type Clients } from './clients';
import { startServices, type RunningServices } from './services';

/** Both services with AUTH_MODE=jwt over TLS, and the means to call them as anyone. */
export interface JwtDeployment {
  readonly services: RunningServices;
  /** TLS to the services, without a credential. */
  readonly tls: ChannelCredentials;
  /** Every token signed so far (a spec checks that no log repeats one). */
  readonly tokens: readonly string[];
  /** A token for `subject` signed by the deployment's key (or `key`, to forge one). */
  tokenOf(
    subject: string,
    roles: Role[],
    options?: { tenant?: string; key?: CryptoKey; expiresAt?: number },
  ): Promise<string>;
  /** TLS with `token` on every call. */
  channelOf(token: string): ChannelCredentials;
  /** Clients of both services calling as `subject` with `roles` in `tenant` (default `acme`). */
  clientsOf(subject: string, roles: Role[], tenant?: string): Promise<Clients>;
  close(): Promise<void>;
}

export async function startJwtDeployment(name: string): Promise<JwtDeployment> {
  const issuer = `https://auth.${name}.test`;
  const audience = `crucible-storage-${name}`;
  const authority: TestAuthority = await createTestAuthority();
  const dir = await mkdtemp(join(tmpdir(), `crucible-e2e-${name}-`));
  const tokens: string[] = [];
  try {
    const server = await authority.issue('server', 'IP:127.0.0.1,DNS:localhost');
    const pair = await generateKeyPair('ES256', { extractable: true });
    const keysFile = join(dir, 'jwks.json');
    await writeFile(keysFile, JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: name }] }));
    const tls = credentials.createSsl(authority.ca);
    const services = await startServices({
      overrides: {
        AUTH_MODE: 'jwt',
        AUTH_JWT_KEYS_FILE: keysFile,
        AUTH_JWT_ISSUER: issuer,
        AUTH_JWT_AUDIENCE: audience,
        TLS_CERT_FILE: server.certFile,
        TLS_KEY_FILE: server.keyFile,
        ALLOW_PLAINTEXT: 'false',
      },
      channel: tls,
    });
    const deployment: JwtDeployment = {
      services,
      tls,
      tokens,
      async tokenOf(subject, roles, options = {}) {
        const now = Math.floor(Date.now() / 1000);
        const token = await new SignJWT({ roles, tenant: options.tenant ?? 'acme' })
          .setProtectedHeader({ alg: 'ES256', kid: name })
          .setIssuer(issuer)
          .setAudience(audience)
          .setSubject(subject)
          .setIssuedAt(now)
          .setExpirationTime(options.expiresAt ?? now + 600)
          .sign(options.key ?? pair.privateKey);
        tokens.push(token);
        return token;
      },
      channelOf(token) {
        return credentials.combineChannelCredentials(
          tls,
          credentials.createFromMetadataGenerator((_, callback) => {
            const metadata = new Metadata();
            metadata.set('authorization', `Bearer ${token}`);
            callback(null, metadata);
          }),
        );
      },
      async clientsOf(subject, roles, tenant) {
        const token = await deployment.tokenOf(subject, roles, tenant === undefined ? {} : { tenant });
        return createClients(services.command.address, services.query.address, deployment.channelOf(token));
      },
      async close() {
        await services.close();
        await authority.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
    return deployment;
  } catch (err) {
    await authority.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
