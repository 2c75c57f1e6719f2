import type { Metadata } from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
import type { AuthConfig, IdentityLimits } from '../config';
import { CrucibleError, PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError } from '../errors';
import type { Logger } from '../logging';
import { createIdentityLimiter } from './identity-limits';
import { createJwtVerifier } from './jwt';
import { createCertificateIdentities } from './mtls';
import { ANONYMOUS_ADMIN, mayCall, type Caller } from './roles';

/** What a call shows of who makes it. */
export interface CallCredentials {
  readonly metadata: Metadata;
  /** The client's certificate, verified by TLS (mTLS only). */
  readonly certificate: PeerCertificate | undefined;
  readonly peer: string;
}

/** Finds out who makes a call (AUTH_MODE). */
export interface Authenticator {
  readonly mode: AuthConfig['mode'];
  /** The caller; UnauthenticatedError (or PermissionDeniedError for a known but role-less one). */
  authenticate(credentials: CallCredentials): Promise<Caller>;
  /** Reads keys or identities again (SIGHUP). */
  reload(): Promise<void>;
}

/** A call let in: who makes it, and (a stream) what to call when it ends. */
export interface Admission {
  readonly caller: Caller;
  readonly release: () => void;
}

/**
 * Every RPC of both services passes here before its handler: authentication, the role check
 * (roles.ts), the caller's limits. A refusal is thrown as the status it is (UNAUTHENTICATED,
 * PERMISSION_DENIED, RESOURCE_EXHAUSTED with RetryInfo), logged and counted.
 */
export interface Gate {
  admit(method: string, credentials: CallCredentials, kind: 'unary' | 'stream'): Promise<Admission>;
  /** Logs and counts a refusal its handler made (an executor reporting for another's evaluation). */
  deniedByHandler(method: string, caller: Caller, peer: string, err: PermissionDeniedError): void;
  /** Refusals so far, per status ("UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"). */
  readonly denials: ReadonlyMap<string, number>;
}

/** AUTH_MODE=none: every call is the anonymous admin's. */
const NO_AUTHENTICATION: Authenticator = Object.freeze({
  mode: 'none',
  authenticate: () => Promise.resolve(ANONYMOUS_ADMIN),
  reload: () => Promise.resolve(),
});

/** The authenticator of `config`: its keys or identities are read now, so that a bad file stops the start. */
export async function createAuthenticator(config: AuthConfig): Promise<Authenticator> {
  if (config.mode === 'none') return NO_AUTHENTICATION;
  if (config.mode === 'mtls') {
    const identities = await createCertificateIdentities(config.identitiesFile);
    return {
      mode: 'mtls',
      authenticate: (credentials) => Promise.resolve(identities.callerOf(credentials.certificate)),
      reload: () => identities.reload(),
    };
  }
  const verifier = await createJwtVerifier(config);
  return {
    mode: 'jwt',
    authenticate: (credentials) => verifier.verify(bearerToken(credentials.metadata)),
    reload: () => verifier.reload(),
  };
}

/** The token of the call's one `authorization: Bearer …` header. */
function bearerToken(metadata: Metadata): string {
  const values = metadata.get('authorization');
  if (values.length === 0)
    throw new UnauthenticatedError('this call needs a credential: authorization: Bearer <token>');
  if (values.length > 1) throw new UnauthenticatedError('the call carries more than one authorization header');
  const match = /^Bearer +(\S+)$/i.exec(String(values[0]));
  if (match === null) throw new UnauthenticatedError('the authorization header must read "Bearer <token>"');
  return match[1] as string;
}

/** Denial lines per identity, method and reason: at most one per this long, counting the rest. */
const DENIAL_LOG_INTERVAL_MS = 10_000;

export function createGate(deps: {
  readonly authenticator: Authenticator;
  readonly limits: IdentityLimits;
  readonly logger: Logger;
  readonly now?: () => number;
}): Gate {
  const { authenticator, logger } = deps;
  const now = deps.now ?? Date.now;
  // With AUTH_MODE=none every caller is the one anonymous admin: a limit would throttle all.
  const limiter = authenticator.mode === 'none' ? undefined : createIdentityLimiter(deps.limits, now);
  const denials = new Map<string, number>();
  const lines = new Map<string, { at: number; unlogged: number }>();

  function denied(method: string, identity: string, peer: string, err: CrucibleError, code: string): never {
    record(method, identity, peer, err, code);
    throw err;
  }

  function record(method: string, identity: string, peer: string, err: CrucibleError, code: string): void {
    denials.set(code, (denials.get(code) ?? 0) + 1);
    const key = `${identity}\u0000${method}\u0000${err.message}`;
    const at = now();
    const line = lines.get(key);
    if (line !== undefined && at - line.at < DENIAL_LOG_INTERVAL_MS) {
      line.unlogged += 1;
    } else {
      // The reason is ours (never the token, which no message of ours repeats).
      logger.warn('call denied', {
        method,
        identity,
        peer,
        code,
        reason: err.message,
        deniedSinceLastLine: line?.unlogged ?? 0,
      });
      if (lines.size > 1000) lines.clear();
      lines.set(key, { at, unlogged: 0 });
    }
  }

  return {
    denials,
    deniedByHandler(method, caller, peer, err) {
      record(method, caller.subject, peer, err, 'PERMISSION_DENIED');
    },
    async admit(method, credentials, kind) {
      let caller: Caller;
      try {
        caller = await authenticator.authenticate(credentials);
      } catch (err) {
        if (err instanceof UnauthenticatedError) denied(method, 'unknown', credentials.peer, err, 'UNAUTHENTICATED');
        if (err instanceof PermissionDeniedError) denied(method, 'unknown', credentials.peer, err, 'PERMISSION_DENIED');
        throw err;
      }
      if (!mayCall(caller, method)) {
        const roles = [...caller.roles].join(', ') || 'none';
        const err = new PermissionDeniedError(`${caller.subject} (roles: ${roles}) may not call ${method}`);
        denied(method, caller.subject, credentials.peer, err, 'PERMISSION_DENIED');
      }
      if (limiter === undefined) return { caller, release: () => undefined };
      const waitMs = limiter.takeCall(caller.subject);
      if (waitMs !== undefined) {
        const err = new ResourceExhaustedError(
          `${caller.subject} is over its rate of calls; retry in ${waitMs} ms`,
          waitMs,
        );
        denied(method, caller.subject, credentials.peer, err, 'RESOURCE_EXHAUSTED');
      }
      if (kind === 'unary') return { caller, release: () => undefined };
      const release = limiter.openStream(caller.subject);
      if (release === undefined) {
        const err = new ResourceExhaustedError(
          `${caller.subject} holds its most open streams (AUTH_MAX_STREAMS); retry once one ends`,
          1000,
        );
        denied(method, caller.subject, credentials.peer, err, 'RESOURCE_EXHAUSTED');
      }
      return { caller, release };
    },
  };
}

/** A gate that lets every call in as the anonymous admin (AUTH_MODE=none): for tests that build servers in-process. */
export function openGate(logger: Logger): Gate {
  return createGate({
    authenticator: NO_AUTHENTICATION,
    limits: { requestsPerSecond: 0, burst: 1, maxStreams: 0 },
    logger,
  });
}
