import { readFile } from 'node:fs/promises';
import { ServerCredentials } from '@grpc/grpc-js';
import { createAuthenticator, createGate, openGate, type Gate } from '../auth';
import type { Config, TransportConfig } from '../config';
import type { Logger } from '../logging';

/** Who may reach a server and how: its transport, the gate every call passes, reflection. */
export interface ServerAccess {
  readonly credentials: ServerCredentials;
  readonly gate: Gate;
  readonly reflection: boolean;
  /** Reads keys, identities again (SIGHUP); a file that no longer reads keeps the old ones. */
  reload(): Promise<void>;
}

async function readPem(setting: string, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new Error(`${setting} ${file} cannot be read: ${(err as Error).message}`, { cause: err });
  }
}

/** TLS from the configured files (client certificates required when a client CA is set), or plaintext. */
export async function serverCredentialsOf(transport: TransportConfig): Promise<ServerCredentials> {
  if (transport.kind === 'plaintext') return ServerCredentials.createInsecure();
  const [cert, key, clientCa] = await Promise.all([
    readPem('TLS_CERT_FILE', transport.certFile),
    readPem('TLS_KEY_FILE', transport.keyFile),
    transport.clientCaFile === '' ? Promise.resolve(null) : readPem('TLS_CLIENT_CA_FILE', transport.clientCaFile),
  ]);
  return ServerCredentials.createSsl(clientCa, [{ cert_chain: cert, private_key: key }], clientCa !== null);
}

/**
 * The access of a service as configured: its files are read now, so that a missing key or
 * certificate stops the start with the setting's name. Running without authentication is said
 * at every start, at warn level.
 */
export async function createServerAccess(config: Config, logger: Logger): Promise<ServerAccess> {
  const authenticator = await createAuthenticator(config.auth);
  if (config.auth.mode === 'none') {
    logger.warn(
      'AUTH_MODE=none: every caller is an admin and nothing is checked; for development and tests only (docs/security.md)',
      { environment: config.environment },
    );
  }
  if (config.transport.kind === 'plaintext') {
    logger.info('serving without TLS (ALLOW_PLAINTEXT): credentials and data cross the network in clear');
  }
  return {
    credentials: await serverCredentialsOf(config.transport),
    gate: createGate({ authenticator, limits: config.identityLimits, logger }),
    reflection: config.reflection,
    reload: () => authenticator.reload(),
  };
}

/** Plaintext, every call the anonymous admin's: for servers that tests build in-process. */
export function openAccess(logger: Logger): ServerAccess {
  return {
    credentials: ServerCredentials.createInsecure(),
    gate: openGate(logger),
    reflection: true,
    reload: () => Promise.resolve(),
  };
}
