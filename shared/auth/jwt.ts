import { createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  errors,
  exportJWK,
  jwtVerify,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  type JWTVerifyResult,
} from 'jose';
import { PermissionDeniedError, UnauthenticatedError } from '../errors';
import { TENANT_PATTERN } from '../domain/tenants';
import { rolesOf, type Caller } from './roles';

/** Signature algorithms a token may use: public-key ones only (never `none`, never a shared secret). */
const ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
];

/** Clocks of issuer and service may disagree this much on `exp` and `nbf`. */
const CLOCK_TOLERANCE_SECONDS = 30;

/** Verified tokens remembered, so that a client's every call does not pay a signature check. */
const CACHE_ENTRIES = 10_000;

export interface JwtSettings {
  readonly keysFile: string;
  readonly issuer: string;
  readonly audience: string;
  readonly rolesClaim: string;
  readonly tenantClaim: string;
}

export interface JwtVerifier {
  /** The caller a token names; UnauthenticatedError when it is not a valid token of ours. */
  verify(token: string): Promise<Caller>;
  /** Reads the keys file again (SIGHUP): a key added or removed counts from now. */
  reload(): Promise<void>;
}

/** The keys of a JWKS file, or of PEM public keys (each given its thumbprint as `kid`). */
export async function readVerificationKeys(file: string): Promise<JSONWebKeySet> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`AUTH_JWT_KEYS_FILE ${file} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  if (text.trimStart().startsWith('{')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new Error(`AUTH_JWT_KEYS_FILE ${file} is neither a JWKS (it does not parse as JSON) nor PEM`);
    }
    const keys = (parsed as { keys?: unknown }).keys;
    if (!Array.isArray(keys) || keys.length === 0) throw new Error(`AUTH_JWT_KEYS_FILE ${file}: a JWKS needs "keys"`);
    for (const key of keys as JWK[]) {
      if (key.d !== undefined || key.k !== undefined) {
        throw new Error(`AUTH_JWT_KEYS_FILE ${file} holds a private or secret key: give it public keys only`);
      }
    }
    return { keys: keys as JWK[] };
  }
  const blocks = text.match(/-----BEGIN PUBLIC KEY-----[\s\S]+?-----END PUBLIC KEY-----/g) ?? [];
  if (blocks.length === 0) {
    throw new Error(`AUTH_JWT_KEYS_FILE ${file} holds no JWKS and no PEM "BEGIN PUBLIC KEY" block`);
  }
  return {
    keys: await Promise.all(
      blocks.map(async (pem) => {
        const jwk = await exportJWK(createPublicKey(pem));
        return { ...jwk, kid: await calculateJwkThumbprint(jwk) };
      }),
    ),
  };
}

/**
 * Bearer tokens: JWTs signed by one of the configured public keys, with our issuer and audience,
 * unexpired, naming a subject, a tenant and roles. A key set where more than one key fits a token
 * without `kid` (PEM keys during a rotation) is tried key by key.
 */
export async function createJwtVerifier(settings: JwtSettings, now: () => number = Date.now): Promise<JwtVerifier> {
  let keySet = createLocalJWKSet(await readVerificationKeys(settings.keysFile));
  const cache = new Map<string, { caller: Caller; expiresAtMs: number }>();
  const options = {
    issuer: settings.issuer,
    audience: settings.audience,
    algorithms: ALGORITHMS,
    clockTolerance: CLOCK_TOLERANCE_SECONDS,
    requiredClaims: ['exp', 'sub'],
  };

  async function verified(token: string): Promise<JWTVerifyResult> {
    const verifyOptions = { ...options, currentDate: new Date(now()) };
    try {
      return await jwtVerify(token, keySet, verifyOptions);
    } catch (err) {
      if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
      let last: unknown = err;
      for await (const key of err) {
        try {
          return await jwtVerify(token, key, verifyOptions);
        } catch (keyErr) {
          last = keyErr;
        }
      }
      throw last;
    }
  }

  return {
    async verify(token) {
      const cached = cache.get(token);
      if (cached !== undefined && cached.expiresAtMs > now()) return cached.caller;
      let payload: JWTPayload;
      try {
        ({ payload } = await verified(token));
      } catch (err) {
        throw new UnauthenticatedError(`invalid bearer token: ${reasonOf(err)}`);
      }
      const caller = callerOf(payload, settings);
      if (cache.size >= CACHE_ENTRIES) cache.delete(cache.keys().next().value as string);
      cache.set(token, { caller, expiresAtMs: ((payload.exp ?? 0) + CLOCK_TOLERANCE_SECONDS) * 1000 });
      return caller;
    },
    async reload() {
      keySet = createLocalJWKSet(await readVerificationKeys(settings.keysFile));
      cache.clear();
    },
  };
}

/** The caller a verified token names: its subject, tenant and known roles. */
function callerOf(payload: JWTPayload, settings: JwtSettings): Caller {
  const subject = payload.sub ?? '';
  if (subject.length === 0 || subject.length > 256) {
    throw new UnauthenticatedError('invalid bearer token: "sub" must be 1-256 characters');
  }
  const tenant = payload[settings.tenantClaim];
  if (typeof tenant !== 'string' || !TENANT_PATTERN.test(tenant)) {
    throw new UnauthenticatedError(
      `invalid bearer token: "${settings.tenantClaim}" must name a tenant (1-64 characters of [A-Za-z0-9._-])`,
    );
  }
  const claimed = payload[settings.rolesClaim];
  const names = Array.isArray(claimed) ? claimed : typeof claimed === 'string' ? claimed.split(' ') : [];
  const roles = rolesOf(names);
  if (roles.size === 0) {
    throw new PermissionDeniedError(`the token of ${subject} names no role ("${settings.rolesClaim}")`);
  }
  return Object.freeze({ subject, tenant, roles });
}

/** Why jose refused a token, in words that never repeat the token. */
function reasonOf(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'expired';
  if (err instanceof errors.JWTClaimValidationFailed) return `claim "${err.claim}" ${err.reason}`;
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'signature does not verify';
  if (err instanceof errors.JWKSNoMatchingKey) return 'signed by no configured key';
  if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported) return 'algorithm not allowed';
  if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid) return 'malformed';
  return 'malformed';
}
