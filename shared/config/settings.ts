import { DEFAULT_EVAL_ID_PATTERN } from '../domain/eval-id';

/**
 * Every configuration setting of the services, once: its variable, how it is parsed and
 * checked, its default in each environment, and what it means. `loadConfig` parses with it,
 * `--help` prints it, and the README's configuration table is generated from it
 * (`npm run docs:config`; `make lint` fails when the README drifts).
 */

export type Environment = 'development' | 'test' | 'production';
export const ENVIRONMENTS: readonly Environment[] = ['development', 'test', 'production'];

/** A parser turns the variable's text into a value, or throws a Problem saying what it must be. */
export interface Parser<T> {
  parse(raw: string): T;
  /** How a refused value is quoted back: without what is secret in it (a URL's password). */
  shown?(raw: string): string;
}

/** Why a value was refused; the message completes "KEY must …". */
export class Problem extends Error {}

/** Marks a setting that has no default in an environment: it must be set there. */
export const REQUIRED = Symbol('required');

export interface Setting<T> {
  readonly parser: Parser<T>;
  /** The default, as the variable's text, per environment (`all` for every one not named). */
  readonly defaults: Partial<Record<Environment | 'all', string | typeof REQUIRED>>;
  /** What the setting means, one line (no default: that is printed from `defaults`). */
  readonly help: string;
  /** How the default reads when its text says little (an empty value: "AWS's endpoint"). */
  readonly shownDefault?: string;
}

const setting = <T>(definition: Setting<T>): Setting<T> => definition;

// Parsers ---------------------------------------------------------------------------------

function wholeNumber(min: number, max: number): Parser<number> {
  return {
    parse(raw) {
      const value = Number(raw);
      if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
        throw new Problem(`be a whole number from ${min} to ${max}`);
      }
      return value;
    },
  };
}

export function oneOf<T extends string>(values: readonly T[]): Parser<T> {
  return {
    parse(raw) {
      if ((values as readonly string[]).includes(raw)) return raw as T;
      const shown = values.length > 1 ? `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}` : values[0];
      throw new Problem(`be ${shown}`);
    },
  };
}

export const bool: Parser<boolean> = {
  parse(raw) {
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    throw new Problem('be true or false');
  },
};

export const text: Parser<string> = { parse: (raw) => raw };

/** A URL with one of `protocols` (an empty value is allowed when `optional`). */
export function url(protocols: readonly string[], options: { optional?: boolean } = {}): Parser<string> {
  return {
    parse(raw) {
      if (raw === '' && options.optional === true) return raw;
      let parsed: URL;
      try {
        parsed = new URL(raw);
      } catch {
        throw new Problem('be a valid URL');
      }
      if (protocols.length > 0 && !protocols.includes(parsed.protocol)) {
        throw new Problem(`start with ${protocols.map((p) => `${p}//`).join(' or ')}`);
      }
      return raw;
    },
    // Whether it parses or not: everything between "//user:" and the last "@" before the host.
    shown: (raw) => raw.replace(/^([^/]*\/\/[^/:@]*:)[^/]*@/, '$1***@'),
  };
}

/** A Redis node's address. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** `host:port`, an IPv6 host in brackets: what hostPorts reads back. */
export function formatHostPort({ host, port }: HostPort): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** Comma-separated `host:port` addresses (IPv6 in brackets); empty: none. */
export const hostPorts: Parser<readonly HostPort[]> = {
  parse(raw) {
    const items = raw
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    return Object.freeze(
      items.map((item) => {
        const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(item);
        const port = Number(match?.[2]);
        if (match === null || port < 1 || port > 65535)
          throw new Problem(`list host:port addresses separated by commas (${JSON.stringify(item)} is not one)`);
        return Object.freeze({ host: (match[1] as string).replace(/^\[|\]$/g, ''), port });
      }),
    );
  },
};

export function matching(pattern: RegExp, description: string): Parser<string> {
  return {
    parse(raw) {
      if (!pattern.test(raw)) throw new Problem(`be ${description}`);
      return raw;
    },
  };
}

/** Comma-separated, trimmed, at least one. */
/** Metadata keys filtered lists may name: each a facet index per status (read-models/evaluation-list.ts). */
const metadataKeys: Parser<readonly string[]> = {
  parse(raw) {
    const keys = raw
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    if (keys.length > 16) throw new Problem('name at most 16 keys (each is an index per status)');
    const bad = keys.find((key) => !/^[A-Za-z0-9_.-]{1,64}$/.test(key));
    if (bad !== undefined)
      throw new Problem(`list keys of 1-64 characters of [A-Za-z0-9_.-] (${JSON.stringify(bad)} is not one)`);
    return Object.freeze([...new Set(keys)]);
  },
};

export const list: Parser<readonly string[]> = {
  parse(raw) {
    const items = raw
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    if (items.length === 0) throw new Problem('list at least one value');
    return Object.freeze(items);
  },
};

/** A share, from 0 to 1. */
const ratio: Parser<number> = {
  parse(raw) {
    const value = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(value) || value < 0 || value > 1)
      throw new Problem('be a number from 0 to 1');
    return value;
  },
};

/** A port to listen on, or none (empty: off). */
const optionalPort: Parser<number | undefined> = {
  parse(raw) {
    if (raw.trim() === '') return undefined;
    return wholeNumber(0, 65535).parse(raw);
  },
};

const DURATION_UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** A duration in whole seconds, minutes, hours or days ("90d", "24h", "45s"; a bare number is seconds), as ms. */
function duration(minSeconds: number, maxSeconds: number): Parser<number> {
  return {
    parse(raw) {
      const match = /^(\d+)([smhd]?)$/.exec(raw.trim());
      const seconds = match === null ? NaN : Number(match[1]) * (DURATION_UNITS[match[2] || 's'] ?? NaN);
      if (!Number.isSafeInteger(seconds) || seconds < minSeconds || seconds > maxSeconds)
        throw new Problem(
          `be a duration from ${minSeconds} s to ${maxSeconds / 86_400} days: a whole number with s, m, h or d ("90d", "24h")`,
        );
      return seconds * 1000;
    },
  };
}

const regularExpression: Parser<RegExp> = {
  parse(raw) {
    try {
      return new RegExp(raw);
    } catch {
      throw new Problem('be a valid regular expression');
    }
  },
};

// The settings ----------------------------------------------------------------------------

/** The same default in development and test (local servers), another (or none) in production. */
const LOCAL = (value: string, production: string | typeof REQUIRED = REQUIRED): Setting<unknown>['defaults'] => ({
  development: value,
  test: value,
  production,
});

/** A text setting (a file, a name) that is unset unless given. */
const unsetByDefault = (help: string): Setting<string> =>
  setting({ parser: text, defaults: { all: '' }, shownDefault: 'none', help });

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/**
 * MAX_REQUEST_BYTES_IN_FLIGHT's default, also what a server given no figure uses: 15 of the
 * command service's largest requests (16 MiB + 64 KiB by default) read at once, or 256 of the
 * query service's (1 MiB).
 */
export const DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT = 256 * MiB;

/** REQUEST_READ_TIMEOUT_MS's default, also what a server given no figure uses. */
export const DEFAULT_REQUEST_READ_TIMEOUT_MS = 30_000;
/** CONNECTION_IDLE_MS's default, also what a server given no figure uses. */
export const DEFAULT_CONNECTION_IDLE_MS = 300_000;

export const SETTINGS = {
  ENVIRONMENT: setting({
    parser: oneOf(ENVIRONMENTS),
    defaults: { all: 'development' },
    help: 'picks the defaults of the other settings: local servers in development and test, none in production',
  }),
  DATABASE_URL: setting({
    parser: url(['postgres:', 'postgresql:']),
    defaults: LOCAL('postgres://postgres@127.0.0.1:5432/crucible'),
    help: 'PostgreSQL URL',
  }),
  QUERY_DATABASE_URL: setting({
    parser: url(['postgres:', 'postgresql:']),
    defaults: {},
    shownDefault: 'DATABASE_URL',
    help: 'URL the query side reads the log with; its sessions are read-only (give it a login in role `crucible_reader`)',
  }),
  MIGRATION_DATABASE_URL: setting({
    parser: url(['postgres:', 'postgresql:']),
    defaults: {},
    shownDefault: 'DATABASE_URL',
    help: 'URL the command service applies migrations with at start-up (a role that owns the schema); DATABASE_URL then serves (a login in role `crucible_writer`)',
  }),
  REDIS_URL: setting({
    parser: url(['redis:', 'rediss:']),
    defaults: LOCAL('redis://127.0.0.1:6379/0'),
    help: 'Redis URL',
  }),
  REDIS_CLUSTER_NODES: setting({
    parser: hostPorts,
    defaults: { all: '' },
    shownDefault: 'none: one Redis at REDIS_URL',
    help: 'comma-separated host:port of some nodes of a Redis Cluster (7.0+): the services then use the cluster (REDIS_URL gives only its user, password and TLS, and must name database 0); `make up` starts a local one when local addresses named here do not answer',
  }),
  REDIS_KEY_PREFIX: setting({
    parser: matching(/^[A-Za-z0-9:_.-]{1,64}$/, '1-64 characters of [A-Za-z0-9:_.-]'),
    defaults: { all: 'crucible' },
    help: 'prefix of every Redis key and channel',
  }),
  REDIS_KEYSPACE_EVENTS: setting({
    parser: bool,
    defaults: { all: 'true' },
    help: 'query side: switch on Redis keyspace events (notify-keyspace-events Egxe) and rewrite deleted or evicted read-model keys at once; false: lost keys are found by reads only',
  }),
  REDIS_ALLOW_EVICTION: setting({
    parser: bool,
    defaults: { all: 'false' },
    help: 'query side: start on a Redis whose maxmemory-policy evicts keys (lost keys are then repaired on read); refused otherwise',
  }),
  INDEXED_METADATA_KEYS: setting({
    parser: metadataKeys,
    defaults: { all: '' },
    shownDefault: 'none',
    help: 'query side: comma-separated metadata keys ListEvaluations and CountEvaluations may filter on (each kept as an index per status, filled in from the records when a key is added)',
  }),
  READ_MODEL_PARTITIONS: setting({
    parser: wholeNumber(1, 1024),
    defaults: { all: '1' },
    help: "read-model partitions (spread over a Redis Cluster's slots), 1-1024; both services must be given the same count (the command side announces each change on its partition's channel), and changing it takes a rebuild (docs/read-models.md)",
  }),
  S3_ENDPOINT: setting({
    parser: url([], { optional: true }),
    defaults: LOCAL('http://127.0.0.1:4569', ''),
    shownDefault: "dev/test `http://127.0.0.1:4569`; production: AWS's endpoint",
    help: 'S3 API endpoint',
  }),
  S3_BUCKET: setting({ parser: text, defaults: LOCAL('crucible-outputs'), help: 'bucket for large outputs' }),
  S3_REGION: setting({ parser: text, defaults: { all: 'us-east-1' }, help: 'S3 region' }),
  S3_ACCESS_KEY_ID: setting({
    parser: text,
    defaults: LOCAL('S3RVER', ''),
    shownDefault: "dev/test `S3RVER`; production: the SDK's credential chain",
    help: 'S3 access key (set together with S3_SECRET_ACCESS_KEY)',
  }),
  S3_SECRET_ACCESS_KEY: setting({
    parser: text,
    defaults: LOCAL('S3RVER', ''),
    shownDefault: "dev/test `S3RVER`; production: the SDK's credential chain",
    help: 'S3 secret key',
  }),
  S3_FORCE_PATH_STYLE: setting({
    parser: bool,
    defaults: LOCAL('true', 'false'),
    help: '`true` for s3rver/MinIO-style servers',
  }),
  S3_CHECKSUM_MODE: setting({
    parser: oneOf(['WHEN_REQUIRED', 'WHEN_SUPPORTED'] as const),
    defaults: LOCAL('WHEN_REQUIRED', 'WHEN_SUPPORTED'),
    help: '`WHEN_REQUIRED` for s3rver, `WHEN_SUPPORTED` for AWS',
  }),
  BLOB_FALLBACK_DIR: setting({
    parser: text,
    defaults: { development: '.data/blob-fallback', all: '' },
    shownDefault: 'development `.data/blob-fallback`; otherwise none (S3 down is UNAVAILABLE)',
    help: 'where the command service writes large bodies and log segments while S3 is unreachable (a durable local directory; the query service reads it too when it can), moved to S3 once S3 answers',
  }),
  BLOB_FALLBACK_RETRY_MS: setting({
    parser: wholeNumber(100, 3_600_000),
    defaults: { all: '5000' },
    help: 'after S3 failed, large writes go straight to the fallback directory this long before S3 is tried again',
  }),
  BLOB_MOVER_INTERVAL_MS: setting({
    parser: wholeNumber(100, 3_600_000),
    defaults: { all: '5000' },
    help: 'how often the command service looks for blobs in the fallback directory to copy to S3',
  }),
  ORPHAN_GRACE_SECONDS: setting({
    parser: wholeNumber(60, 365 * 86_400),
    defaults: { all: '86400' },
    help: 'a blob no row refers to is an orphan once it is this old (younger ones may be uploads whose command is on its way)',
  }),
  ORPHAN_SWEEP_INTERVAL_SECONDS: setting({
    parser: wholeNumber(0, 30 * 86_400),
    defaults: { all: '3600' },
    help: 'how often the command service deletes orphaned blobs from S3 and the fallback directory (0: never; `npm run sweep-orphans -- --dry-run` shows them)',
  }),
  HOT_RETENTION: setting({
    parser: duration(1, 3650 * 86_400),
    defaults: { all: '24h' },
    help: 'a terminal evaluation leaves the Redis read models (lists, counts, watch replays) this long after its last change; GetEvaluation then reads it from PostgreSQL or the archive',
  }),
  HOT_SWEEP_INTERVAL_SECONDS: setting({
    parser: wholeNumber(0, 86_400),
    defaults: { all: '300', test: '0' },
    help: 'how often the query service takes evaluations past HOT_RETENTION out of Redis (0: never)',
  }),
  ACTIVE_RETENTION: setting({
    parser: duration(1, 36_500 * 86_400),
    defaults: { all: '90d' },
    help: 'a terminal evaluation untouched this long is archived to S3 (compressed NDJSON) with its events, bodies and metrics, and leaves the hot PostgreSQL tables',
  }),
  LOG_HOT_RETENTION: setting({
    parser: duration(1, 36_500 * 86_400),
    defaults: { all: '30d' },
    help: 'log bytes kept in PostgreSQL move to S3 once this old',
  }),
  LOG_RETENTION: setting({
    parser: duration(1, 36_500 * 86_400),
    defaults: { all: '365d' },
    help: 'logs are deleted once this old (ReadLogs then says they expired)',
  }),
  SECURITY_RETENTION: setting({
    parser: duration(1, 36_500 * 86_400),
    defaults: { all: '2557d' },
    help: 'security records (security_audit, security_events) are purged once this old (2557 days: seven years)',
  }),
  RETENTION_INTERVAL_SECONDS: setting({
    parser: wholeNumber(0, 30 * 86_400),
    defaults: { all: '0' },
    help: 'how often the command service runs the retention job (0: never; `npm run retention -- --dry-run` shows what it would do)',
  }),
  S3_MULTIPART_THRESHOLD_BYTES: setting({
    parser: wholeNumber(1024, 5 * GiB),
    defaults: { all: String(256 * MiB) },
    help: "a streamed output above this is uploaded to S3 in parts, several at once (up to 5 GiB: one PutObject's limit)",
  }),
  S3_PART_BYTES: setting({
    parser: wholeNumber(1024, 5 * GiB),
    defaults: { all: String(8 * MiB) },
    help: 'bytes per part of a multipart upload (S3 wants 5 MiB or more; grown for bodies past 10,000 parts)',
  }),
  S3_PARTS_IN_FLIGHT: setting({
    parser: wholeNumber(1, 64),
    defaults: { all: '4' },
    help: 'parts of one upload sent at once: an upload holds about this many parts in memory',
  }),
  UPLOAD_EXPIRY_SECONDS: setting({
    parser: wholeNumber(60, 604_800),
    defaults: { all: '3600' },
    help: 'a direct upload (`CreateOutputUpload`) must be completed within this; its URLs expire then, and it is aborted',
  }),
  S3_PUBLIC_ENDPOINT: setting({
    parser: url(['http:', 'https:'], { optional: true }),
    defaults: { all: '' },
    shownDefault: 'S3_ENDPOINT',
    help: 'endpoint the URLs of `GetOutputUrl` point at, when clients reach S3 by another address than the services do',
  }),
  S3_SSE: setting({
    parser: oneOf(['none', 'AES256', 'aws:kms'] as const),
    defaults: { all: 'none' },
    help: 'server-side encryption asked for on every object written: `none`, `AES256` or `aws:kms` (with S3_SSE_KMS_KEY_ID)',
  }),
  S3_SSE_KMS_KEY_ID: setting({
    parser: text,
    defaults: { all: '' },
    shownDefault: "the bucket's default KMS key",
    help: 'KMS key for `S3_SSE=aws:kms`',
  }),
  OUTPUT_URL_DEFAULT_EXPIRY_SECONDS: setting({
    parser: wholeNumber(1, 604_800),
    defaults: { all: '900' },
    help: 'how long a `GetOutputUrl` URL stays valid when the request names no expiry',
  }),
  OUTPUT_URL_MAX_EXPIRY_SECONDS: setting({
    parser: wholeNumber(1, 604_800),
    defaults: { all: '3600' },
    help: 'longest expiry a `GetOutputUrl` request may ask for (SigV4 allows at most 7 days)',
  }),
  HOST: setting({
    parser: text,
    defaults: LOCAL('127.0.0.1', '0.0.0.0'),
    help: 'interface both services bind',
  }),
  COMMAND_PORT: setting({
    parser: wholeNumber(0, 65535),
    defaults: { all: '50051' },
    help: 'command service port (0 picks a free one)',
  }),
  QUERY_PORT: setting({
    parser: wholeNumber(0, 65535),
    defaults: { all: '50052' },
    help: 'query service port (0 picks a free one)',
  }),
  // Prometheus scrapes each service on a port of its own. Off in tests unless asked for: several
  // services of one test run share a host.
  COMMAND_METRICS_PORT: setting({
    parser: optionalPort,
    defaults: { development: '9464', test: '', production: '9464' },
    shownDefault: 'development and production `9464`; test: off',
    help: 'command service Prometheus metrics at `GET /metrics` on this port, on HOST (empty: off; 0 picks a free one)',
  }),
  QUERY_METRICS_PORT: setting({
    parser: optionalPort,
    defaults: { development: '9465', test: '', production: '9465' },
    shownDefault: 'development and production `9465`; test: off',
    help: 'query service Prometheus metrics at `GET /metrics` on this port, on HOST (empty: off; 0 picks a free one)',
  }),
  // Traces (docs/operations.md): the standard OpenTelemetry variable, off unless set.
  OTEL_EXPORTER_OTLP_ENDPOINT: setting({
    parser: url(['http:', 'https:'], { optional: true }),
    defaults: { all: '' },
    shownDefault: 'none (tracing off)',
    help: 'OTLP/HTTP collector traces are sent to (`/v1/traces` is added), e.g. `http://127.0.0.1:4318`',
  }),
  TRACE_SAMPLE_RATIO: setting({
    parser: ratio,
    defaults: { all: '1' },
    help: "share of traces begun by a service that are kept (a caller's sampled `traceparent` is always followed)",
  }),
  // Who may call what (docs/security.md). Development and test may run without credentials,
  // loudly; production has no default, and refuses `none`.
  AUTH_MODE: setting({
    parser: oneOf(['none', 'jwt', 'mtls'] as const),
    defaults: LOCAL('none'),
    help: 'how callers prove who they are: `jwt` (bearer tokens), `mtls` (client certificates) or `none` (everyone is an admin; development and test only)',
  }),
  AUTH_JWT_KEYS_FILE: unsetByDefault(
    'AUTH_MODE=jwt: the public keys tokens are verified with, a JWKS (JSON) or PEM public keys; re-read on SIGHUP',
  ),
  AUTH_JWT_ISSUER: unsetByDefault('AUTH_MODE=jwt: the `iss` every token must carry'),
  AUTH_JWT_AUDIENCE: unsetByDefault('AUTH_MODE=jwt: the `aud` every token must carry'),
  AUTH_JWT_ROLES_CLAIM: setting({
    parser: matching(/^\S{1,256}$/, '1-256 characters without spaces'),
    defaults: { all: 'roles' },
    help: "AUTH_MODE=jwt: the claim holding the caller's roles (an array of `api`, `executor`, `reader`, `admin`)",
  }),
  AUTH_JWT_TENANT_CLAIM: setting({
    parser: matching(/^\S{1,256}$/, '1-256 characters without spaces'),
    defaults: { all: 'tenant' },
    help: "AUTH_MODE=jwt: the claim holding the caller's tenant",
  }),
  AUTH_MTLS_IDENTITIES_FILE: unsetByDefault(
    "AUTH_MODE=mtls: JSON mapping a client certificate's SAN (`DNS:…`, `URI:…`) to its `roles` and `tenant`; re-read on SIGHUP",
  ),
  AUTH_REQUESTS_PER_SECOND: setting({
    parser: wholeNumber(0, 1_000_000),
    defaults: { all: '2000' },
    help: 'calls per second one identity may make on average (a token bucket; 0: no limit; not applied with AUTH_MODE=none)',
  }),
  AUTH_BURST: setting({
    parser: wholeNumber(1, 10_000_000),
    defaults: { all: '4000' },
    help: "calls one identity may make at once above its rate (the token bucket's size)",
  }),
  AUTH_MAX_STREAMS: setting({
    parser: wholeNumber(0, 1_000_000),
    defaults: { all: '2000' },
    help: 'streaming calls one identity may hold open at once (0: no limit; not applied with AUTH_MODE=none)',
  }),
  TLS_CERT_FILE: unsetByDefault(
    "the services' TLS certificate chain (PEM); with TLS_KEY_FILE, both services serve TLS only",
  ),
  TLS_KEY_FILE: unsetByDefault("the TLS certificate's private key (PEM)"),
  TLS_CLIENT_CA_FILE: unsetByDefault(
    'CA certificates (PEM) client certificates must chain to: set, clients must present one (mTLS)',
  ),
  ALLOW_PLAINTEXT: setting({
    parser: bool,
    defaults: LOCAL('true', 'false'),
    help: 'serve without TLS when TLS_CERT_FILE is not set (production refuses to start otherwise)',
  }),
  GRPC_REFLECTION: setting({
    parser: bool,
    defaults: LOCAL('true', 'false'),
    help: 'serve gRPC reflection (for `grpcurl` and `buf curl`); it needs no credential, like health',
  }),
  LOG_LEVEL: setting({
    parser: oneOf(['debug', 'info', 'warn', 'error'] as const),
    defaults: { development: 'debug', all: 'info' },
    help: '`debug`, `info`, `warn` or `error`',
  }),
  MAX_CODE_BYTES: setting({
    parser: wholeNumber(1, 64 * MiB),
    defaults: { all: String(MiB) },
    help: 'largest code accepted',
  }),
  MAX_OUTPUT_BYTES: setting({
    parser: wholeNumber(0, GiB),
    defaults: { all: String(16 * MiB) },
    help: 'largest output or error accepted in one message',
  }),
  MAX_STREAMED_OUTPUT_BYTES: setting({
    parser: wholeNumber(0, 5 * 1024 * GiB),
    defaults: { all: String(GiB) },
    help: 'largest output `CompleteEvaluationStream` accepts (at most 5 TiB, the largest S3 object; above S3_MULTIPART_THRESHOLD_BYTES it is uploaded in parts)',
  }),
  REQUEST_READ_TIMEOUT_MS: setting({
    parser: wholeNumber(100, 3_600_000),
    defaults: { all: String(DEFAULT_REQUEST_READ_TIMEOUT_MS) },
    help: 'a request message must arrive within this long once the server reads it (it holds a share of MAX_REQUEST_BYTES_IN_FLIGHT meanwhile); a slower one is cut (DEADLINE_EXCEEDED)',
  }),
  CONNECTION_IDLE_MS: setting({
    parser: wholeNumber(1_000, 86_400_000),
    defaults: { all: String(DEFAULT_CONNECTION_IDLE_MS) },
    help: 'a client connection with no call in progress this long is closed (HTTP/2 GOAWAY; gRPC clients reconnect on their next call), so idle connections cannot pile up',
  }),
  CLIENT_STREAM_IDLE_MS: setting({
    parser: wholeNumber(100, 3_600_000),
    defaults: { all: '30000' },
    help: 'a client stream (`CompleteEvaluationStream`) that sends nothing this long is cut (DEADLINE_EXCEEDED)',
  }),
  MAX_METADATA_BYTES: setting({
    parser: wholeNumber(0, 16 * MiB),
    defaults: { all: String(64 * KiB) },
    help: 'largest metadata, as JSON',
  }),
  MAX_METRICS_PER_CALL: setting({
    parser: wholeNumber(1, 100_000),
    defaults: { all: '1000' },
    help: 'most points one `RecordMetrics` call may carry',
  }),
  MAX_METRIC_NAMES: setting({
    parser: wholeNumber(1, 10_000),
    defaults: { all: '256' },
    help: 'most distinct metric names one evaluation may have (each has a summary in its read model)',
  }),
  LOG_FLUSH_MS: setting({
    parser: wholeNumber(10, 60_000),
    defaults: { all: '1000' },
    help: 'an AppendLogs call stores what it received at least this often (and when it ends)',
  }),
  LOG_SEGMENT_MAX_BYTES: setting({
    parser: wholeNumber(1024, 64 * MiB),
    defaults: { all: String(MiB) },
    help: 'an AppendLogs call stores a segment as soon as this much is waiting: the memory a writer holds',
  }),
  LOGS_AFTER_TERMINAL_SECONDS: setting({
    parser: wholeNumber(0, 86_400),
    defaults: { all: '60' },
    help: 'AppendLogs is accepted this long after the evaluation ended (late lines, the last flush)',
  }),
  METRICS_AFTER_TERMINAL_SECONDS: setting({
    parser: wholeNumber(0, 7 * 24 * 3600),
    defaults: { all: '60' },
    help: '`RecordMetrics` is accepted this long after an evaluation ended (late points are common)',
  }),
  MAX_TIMEOUT_SECONDS: setting({
    parser: wholeNumber(1, 7 * 24 * 3600),
    defaults: { all: '3600' },
    help: 'largest `timeout_seconds`',
  }),
  EVAL_ID_PATTERN: setting({
    parser: regularExpression,
    defaults: { all: DEFAULT_EVAL_ID_PATTERN },
    help: 'what a client-chosen `eval_id` must match (and it is at most 128 characters whatever the pattern)',
  }),
  LANGUAGES: setting({
    parser: list,
    defaults: { all: 'python,javascript,typescript,bash,ruby,go,rust,java,c,cpp' },
    help: 'comma-separated known languages',
  }),
  ENGINES: setting({
    parser: list,
    defaults: { all: 'docker,gvisor,firecracker,kubernetes,local' },
    help: 'comma-separated known engines',
  }),
  PREVIEW_BYTES: setting({
    parser: wholeNumber(0, 64 * KiB),
    defaults: { all: '1024' },
    help: 'preview kept on the row',
  }),
  CODE_INLINE_MAX_BYTES: setting({
    parser: wholeNumber(0, 64 * MiB),
    defaults: { all: String(100 * KiB) },
    help: "submitted code up to this stays in PostgreSQL, larger goes to S3 (the seeds' line)",
  }),
  INLINE_OUTPUT_MAX_BYTES: setting({
    parser: wholeNumber(0, 64 * MiB),
    defaults: { all: String(MiB) },
    help: 'bodies up to this stay in PostgreSQL, larger go to S3',
  }),
  STREAM_PROGRESS_INTERVAL_MS: setting({
    parser: wholeNumber(10, 3_600_000),
    defaults: { all: '5000' },
    help: 'progress message period on streams',
  }),
  STREAM_BUFFER_LIMIT: setting({
    parser: wholeNumber(1, 1_000_000),
    defaults: { all: '1000' },
    help: 'live messages held for a slow stream client before it falls back to catch-up reads',
  }),
  MAX_STREAMS: setting({
    parser: wholeNumber(1, 10_000_000),
    defaults: { all: '20000' },
    help: 'query side: open streams and min_position waits in all, past which calls are RESOURCE_EXHAUSTED',
  }),
  MAX_STREAMS_PER_CONNECTION: setting({
    parser: wholeNumber(1, 10_000_000),
    defaults: { all: '1000' },
    help: 'query side: the same, per client connection',
  }),
  CHANGE_LOG_RETENTION: setting({
    parser: wholeNumber(100, 1_000_000_000),
    defaults: { all: '1000000' },
    help: 'changes kept replayable in Redis per partition',
  }),
  CATCH_UP_INTERVAL_MS: setting({
    parser: wholeNumber(10, 3_600_000),
    defaults: { all: '1000' },
    help: "quiet-timer period of the query side's catch-up",
  }),
  SHUTDOWN_GRACE_MS: setting({
    parser: wholeNumber(0, 600_000),
    defaults: { all: '10000' },
    help: 'time in-flight calls get after SIGTERM',
  }),
  MAX_PENDING_COMMANDS: setting({
    parser: wholeNumber(1, 1_000_000),
    defaults: { all: '256' },
    help: 'commands in progress at once; more wait their turn (MAX_QUEUED_COMMANDS); a streamed output counts once its bytes are in',
  }),
  MAX_QUEUED_COMMANDS: setting({
    parser: wholeNumber(0, 10_000_000),
    defaults: { all: '20000' },
    help: 'commands waiting past MAX_PENDING_COMMANDS; one more, or one whose expected wait outlasts its deadline, is refused at once with `UNAVAILABLE` and a retry delay',
  }),
  COMMAND_STATE_CACHE_ENTRIES: setting({
    parser: wholeNumber(0, 10_000_000),
    defaults: { all: '10000' },
    help: 'evaluations whose latest state the command service keeps to decide their next command without reading it first (the write still checks the revision; a stale one costs a read and a retry); 0 reads every time',
  }),
  // An executor reports well within the TTL (every third of it survives two lost reports); one
  // that misses it drops out of ListExecutors, and its evaluations are judged only after the
  // grace on top (services/command/application/reaper.ts).
  EXECUTOR_HEALTH_TTL_SECONDS: setting({
    parser: wholeNumber(1, 3600),
    defaults: { all: '30' },
    help: "how long an executor's health report counts (`ReportExecutorHealth` answers it); executors report well within it",
  }),
  EXECUTOR_LOST_GRACE_SECONDS: setting({
    parser: wholeNumber(0, 86_400),
    defaults: { all: '60' },
    help: 'command side: a running evaluation fails with `EXECUTOR_LOST` once its executor (if it reports health) is silent this long past the TTL, or with `TIMEOUT` this long past its timeout; 0: never',
  }),
  // grpc-js buffers a request message whole before any of our code runs; unadmitted, that is
  // the largest message times the calls in flight. shared/grpc/admission.ts.
  MAX_REQUEST_BYTES_IN_FLIGHT: setting({
    parser: wholeNumber(1, 1024 * GiB),
    defaults: { all: String(DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT) },
    help: 'request bytes a service holds at once, one being read counting as the largest it accepts, then its size until its call ends; calls past it wait to be read',
  }),
  // Sessions of the services, the CLIs and the migrations (shared/postgres/pool.ts). The
  // services' statements take milliseconds (a one-statement append, reads of at most 500
  // events / 4 MiB), so 30 s is far above any of them, and a runaway one still gives its
  // connection (one of a pool of 10-20) back within half a minute.
  PG_STATEMENT_TIMEOUT_MS: setting({
    parser: wholeNumber(100, 3_600_000),
    defaults: { all: '30000' },
    help: "PostgreSQL `statement_timeout` of the services' sessions; a command's write is also bounded by the call's deadline",
  }),
  // The append lock (event_log_head) is held for one batch's statements and commit: waits behind
  // other commands are milliseconds. Five seconds of waiting means a session outside the
  // service holds it (a psql left in a transaction, a stuck tool): the command is refused with
  // the reason, below most clients' deadlines, instead of every command piling up behind it.
  PG_LOCK_TIMEOUT_MS: setting({
    parser: wholeNumber(10, 600_000),
    defaults: { all: '5000' },
    help: "PostgreSQL `lock_timeout`: a command waiting longer for a lock (the event log's append lock) is refused with `UNAVAILABLE`",
  }),
  // The services never leave a transaction idle (an append's COMMIT goes out with it; migrations
  // run statement after statement), so an idle transaction is a frozen process of ours holding
  // locks. Twice the lock timeout: waiters hear why first, then the holder is cut off.
  PG_IDLE_IN_TRANSACTION_TIMEOUT_MS: setting({
    parser: wholeNumber(100, 3_600_000),
    defaults: { all: '10000' },
    help: 'PostgreSQL `idle_in_transaction_session_timeout`: a session of ours idle that long inside a transaction is ended, freeing its locks',
  }),
  // Without it, a connection whose server vanished (no FIN, no RST) is noticed after Linux's
  // two hours. Node sets only the idle time; on Node 20 the probe interval and count are the
  // kernel's (75 s × 9 by default on Linux).
  PG_KEEPALIVE_DELAY_MS: setting({
    parser: wholeNumber(1000, 7_200_000),
    defaults: { all: '10000' },
    help: 'idle time before TCP keepalive probes on PostgreSQL connections',
  }),
  // A migration's time grows with the tables it rewrites or indexes; cutting one off midway
  // only makes every start-up retry it from the beginning. Its lock waits are still bounded by
  // PG_LOCK_TIMEOUT_MS (a DDL queued on a lock would block every query behind it).
  PG_MIGRATION_STATEMENT_TIMEOUT_MS: setting({
    parser: wholeNumber(0, 86_400_000),
    defaults: { all: '0' },
    help: "`statement_timeout` of migrations; 0 leaves the server's (none unless the role or database sets one)",
  }),
} satisfies Record<string, Setting<unknown>>;

export type SettingKey = keyof typeof SETTINGS;
export type SettingValues = { readonly [K in SettingKey]: ReturnType<(typeof SETTINGS)[K]['parser']['parse']> };

/** The default's text in `environment`: a string, REQUIRED, or undefined (derived elsewhere). */
export function defaultIn(key: SettingKey, environment: Environment): string | typeof REQUIRED | undefined {
  const { defaults } = SETTINGS[key] as Setting<unknown>;
  return environment in defaults ? defaults[environment] : defaults.all;
}

/** How the defaults read in one sentence: "`1000`", "dev/test `x`; required in production". */
function describeDefault(key: SettingKey): string {
  const s = SETTINGS[key] as Setting<unknown>;
  if (s.shownDefault !== undefined) return s.shownDefault.includes('`') ? s.shownDefault : `\`${s.shownDefault}\``;
  const show = (value: string | typeof REQUIRED | undefined): string =>
    value === REQUIRED ? 'required' : value === undefined || value === '' ? 'none' : `\`${value}\``;
  const values = ENVIRONMENTS.map((e) => defaultIn(key, e));
  const [dev, test, prod] = values;
  if (dev === test && test === prod) return show(dev);
  if (dev === test)
    return `dev/test ${show(dev)}; ${prod === REQUIRED ? 'required in production' : `production ${show(prod)}`}`;
  return ENVIRONMENTS.map((e, i) => `${e} ${show(values[i])}`).join('; ');
}

/** `--help`'s lines: every variable, what it means, and its default. */
export function settingsHelp(): string {
  const keys = Object.keys(SETTINGS) as SettingKey[];
  const width = Math.max(...keys.map((k) => k.length));
  return keys
    .map(
      (k) =>
        `  ${k.padEnd(width)}  ${(SETTINGS[k] as Setting<unknown>).help} (default: ${describeDefault(k).replace(/`/g, '')})`,
    )
    .join('\n');
}

/** The README's configuration table (generated: tools/docs-config.ts). */
export function settingsTable(): string {
  const keys = Object.keys(SETTINGS) as SettingKey[];
  const rows = keys.map((k) => `| \`${k}\` | ${(SETTINGS[k] as Setting<unknown>).help} | ${describeDefault(k)} |`);
  return ['| variable | meaning | default |', '| --- | --- | --- |', ...rows].join('\n');
}
