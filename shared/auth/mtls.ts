import { readFile } from 'node:fs/promises';
import type { PeerCertificate } from 'node:tls';
import { PermissionDeniedError, UnauthenticatedError } from '../errors';
import { TENANT_PATTERN } from '../domain/tenants';
import { ROLES, rolesOf, type Caller } from './roles';

/**
 * The identities file (AUTH_MTLS_IDENTITIES_FILE): each SAN of a client certificate, as
 * OpenSSL prints it (`DNS:executor-1.example`, `URI:spiffe://example/executor-1`), mapped to
 * the caller it is. `subject` defaults to the SAN's value without its type.
 *
 *   { "DNS:executor-1.example": { "subject": "executor-1", "roles": ["executor"], "tenant": "acme" } }
 */
export type IdentityMap = ReadonlyMap<string, Caller>;

export interface CertificateIdentities {
  /** The caller a verified client certificate is; UNAUTHENTICATED without one, PERMISSION_DENIED when unmapped. */
  callerOf(certificate: PeerCertificate | undefined): Caller;
  /** Reads the identities file again (SIGHUP). */
  reload(): Promise<void>;
}

export async function readIdentityMap(file: string): Promise<IdentityMap> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`AUTH_MTLS_IDENTITIES_FILE ${file} cannot be read as JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`AUTH_MTLS_IDENTITIES_FILE ${file} must be a JSON object mapping SANs to identities`);
  }
  const identities = new Map<string, Caller>();
  for (const [san, entry] of Object.entries(parsed)) {
    const where = `AUTH_MTLS_IDENTITIES_FILE ${file}, "${san}"`;
    if (!/^(DNS|URI|IP Address|email):\S+$/.test(san)) {
      throw new Error(`${where}: a SAN is written as OpenSSL prints it, e.g. DNS:executor-1.example`);
    }
    const { subject, roles, tenant } = (entry ?? {}) as { subject?: unknown; roles?: unknown; tenant?: unknown };
    const known = Array.isArray(roles) ? rolesOf(roles) : new Set();
    if (!Array.isArray(roles) || known.size !== roles.length || known.size === 0) {
      throw new Error(`${where}: "roles" must list some of ${ROLES.join(', ')}`);
    }
    if (typeof tenant !== 'string' || !TENANT_PATTERN.test(tenant)) {
      throw new Error(`${where}: "tenant" must be 1-64 characters of [A-Za-z0-9._-]`);
    }
    const name = subject ?? san.slice(san.indexOf(':') + 1);
    if (typeof name !== 'string' || name.length === 0 || name.length > 256) {
      throw new Error(`${where}: "subject" must be 1-256 characters`);
    }
    identities.set(san, Object.freeze({ subject: name, tenant, roles: rolesOf(roles as unknown[]) }));
  }
  return identities;
}

/** The SANs of a certificate, as OpenSSL prints them: `DNS:a.example, URI:spiffe://x`. */
function subjectAltNames(certificate: PeerCertificate): string[] {
  return (certificate.subjectaltname ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/**
 * Callers known by the client certificates TLS has already verified against
 * TLS_CLIENT_CA_FILE: the first SAN of the certificate that the identities file maps.
 */
export async function createCertificateIdentities(file: string): Promise<CertificateIdentities> {
  let identities = await readIdentityMap(file);
  return {
    callerOf(certificate) {
      if (certificate === undefined || Object.keys(certificate).length === 0) {
        throw new UnauthenticatedError('this service requires a client certificate (mTLS)');
      }
      const names = subjectAltNames(certificate);
      for (const san of names) {
        const caller = identities.get(san);
        if (caller !== undefined) return caller;
      }
      throw new PermissionDeniedError(
        `no identity is configured for the client certificate's names (${names.join(', ') || 'none'})`,
      );
    },
    async reload() {
      identities = await readIdentityMap(file);
    },
  };
}
