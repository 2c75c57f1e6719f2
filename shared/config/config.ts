/**
 * Configuration of both services, read once at start-up from environment variables.
 *
 * `loadConfig(env)` checks every setting of SETTINGS (settings.ts: each variable's parser,
 * defaults and help, written once) and reports all problems at once, so that a person can fix
 * a deployment in one pass. Only `main.ts` files pass `process.env`; tests pass objects.
 */

import {
  defaultIn,
  Problem,
  REQUIRED,
  SETTINGS,
  type Environment,
  type HostPort,
  type Setting,
  type SettingKey,
  type SettingValues,
} from './settings';

export type { Environment, HostPort };
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type ChecksumMode = 'WHEN_REQUIRED' | 'WHEN_SUPPORTED';

export interface S3Config {
  /** Empty means the SDK's default endpoint (AWS). */
  readonly endpoint: string;
  readonly bucket: string;
  readonly region: string;
  /** Empty means the SDK's default credential chain. */
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly forcePathStyle: boolean;
  /** s3rver needs WHEN_REQUIRED: with the SDK default it stores aws-chunked framing as data. */
  readonly checksumMode: ChecksumMode;
  /** Where presigned URLs point; empty means `endpoint`. */
  readonly publicEndpoint: string;
  /** Server-side encryption asked for on every object write. */
  readonly sse: ServerSideEncryption;
  /** How large streamed bodies are uploaded in parts. */
  readonly multipart: MultipartConfig;
}

/** Multipart uploads of large streamed bodies (shared/blobs/s3-multipart.ts). */
export interface MultipartConfig {
  readonly thresholdBytes: number;
  readonly partBytes: number;
  readonly partsInFlight: number;
}

export type ServerSideEncryption =
  | { readonly kind: 'none' }
  | { readonly kind: 'AES256' }
  /** `keyId` empty: the bucket's default KMS key. */
  | { readonly kind: 'aws:kms'; readonly keyId: string };

/** The fallback file store for large writes while S3 is down (BLOB_FALLBACK_DIR); `dir` empty: none. */
export interface BlobFallbackConfig {
  readonly dir: string;
  readonly retryPrimaryAfterMs: number;
  readonly moverIntervalMs: number;
}

/** The orphan sweep (blobs no row refers to): how old one must be, how often (0: never). */
export interface OrphanSweepConfig {
  readonly graceMs: number;
  readonly intervalMs: number;
}

/** Retention and tiering (docs/operations.md "Retention"), every age in ms. */
export interface RetentionConfig {
  /** Terminal evaluations leave Redis this long after their last change. */
  readonly hotMs: number;
  /** How often the query service sweeps them out (0: never). */
  readonly hotSweepIntervalMs: number;
  readonly activeMs: number;
  readonly logHotMs: number;
  readonly logMs: number;
  readonly securityMs: number;
  /** How often the command service runs the retention job (0: never). */
  readonly intervalMs: number;
}

export interface OutputUrlConfig {
  readonly defaultExpirySeconds: number;
  readonly maxExpirySeconds: number;
  /** How long a direct upload (CreateOutputUpload) may take before it is aborted. */
  readonly uploadExpirySeconds: number;
}

/** How callers prove who they are (shared/auth; docs/security.md). */
export type AuthConfig =
  | { readonly mode: 'none' }
  | {
      readonly mode: 'jwt';
      /** A JWKS (JSON) or PEM public keys. */
      readonly keysFile: string;
      readonly issuer: string;
      readonly audience: string;
      readonly rolesClaim: string;
      readonly tenantClaim: string;
    }
  | { readonly mode: 'mtls'; readonly identitiesFile: string };

/** What one identity may do at once (not applied with AUTH_MODE=none: everyone is one identity then). */
export interface IdentityLimits {
  /** 0: no limit. */
  readonly requestsPerSecond: number;
  readonly burst: number;
  /** 0: no limit. */
  readonly maxStreams: number;
}

/** How both services serve: plaintext, or TLS (with client certificates required when `clientCaFile` is set). */
export type TransportConfig =
  | { readonly kind: 'plaintext' }
  | { readonly kind: 'tls'; readonly certFile: string; readonly keyFile: string; readonly clientCaFile: string };

export interface Limits {
  readonly maxCodeBytes: number;
  readonly maxOutputBytes: number;
  /** Largest output CompleteEvaluationStream accepts (it never holds one whole in memory). */
  readonly maxStreamedOutputBytes: number;
  /** A client stream that sends nothing this long is cut: it holds an upload and a call slot. */
  readonly clientStreamIdleMs: number;
  readonly maxMetadataBytes: number;
  /** Points one RecordMetrics call may carry. */
  readonly maxMetricsPerCall: number;
  /** Distinct metric names one evaluation may have. */
  readonly maxMetricNames: number;
  /** RecordMetrics is accepted this long after the evaluation ended. */
  readonly metricsAfterTerminalMs: number;
  /** An AppendLogs call stores what it received at least this often. */
  readonly logFlushMs: number;
  /** An AppendLogs call stores a segment once this much waits. */
  readonly logSegmentMaxBytes: number;
  /** AppendLogs is accepted this long after the evaluation ended. */
  readonly logsAfterTerminalMs: number;
  readonly maxTimeoutSeconds: number;
  readonly evalIdPattern: RegExp;
  readonly languages: readonly string[];
  readonly engines: readonly string[];
  /** How many leading bytes of an output or error are kept as a preview on the row. */
  readonly previewBytes: number;
  /** Bodies up to this size are kept in PostgreSQL, larger ones in S3. */
  readonly inlineOutputMaxBytes: number;
  /** Code up to this size is kept in PostgreSQL, larger in S3. */
  readonly inlineCodeMaxBytes: number;
  /** Request bytes the command service holds at once; later requests wait to be read. */
  readonly maxRequestBytesInFlight: number;
  /** A request message must arrive within this long of being read. */
  readonly requestReadTimeoutMs: number;
  /** A client connection with no call in progress this long is closed. */
  readonly connectionIdleMs: number;
}

export interface StreamConfig {
  readonly progressIntervalMs: number;
  /** Live messages a stream may hold for a slow client before it falls back to catch-up reads. */
  readonly bufferLimit: number;
  /** Entries kept in the replayable change log in Redis (per partition). */
  readonly changeLogRetention: number;
  /** Streams and min_position waits open at once, in all and per client connection. */
  readonly maxOpen: number;
  readonly maxOpenPerConnection: number;
}

/** What every PostgreSQL session is opened with (shared/postgres/pool.ts). */
export interface PostgresSessionConfig {
  readonly statementTimeoutMs: number;
  readonly lockTimeoutMs: number;
  readonly idleInTransactionTimeoutMs: number;
  /** Idle time before TCP keepalive probes. */
  readonly keepAliveDelayMs: number;
  /** statement_timeout of the migration session; 0 leaves the server's own. */
  readonly migrationStatementTimeoutMs: number;
}

/** Executor health (ReportExecutorHealth) and the reaper of evaluations whose executor is gone. */
export interface ExecutorConfig {
  /** How long a health report counts: its Redis key's TTL, and what ReportExecutorHealth answers. */
  readonly healthTtlSeconds: number;
  /**
   * A running evaluation is failed once its executor has been silent this long past the TTL
   * (EXECUTOR_LOST), or it ran this long past its timeout (TIMEOUT). 0: the reaper is off.
   */
  readonly lostGraceSeconds: number;
}

export interface Config {
  readonly environment: Environment;
  readonly logLevel: LogLevel;
  readonly host: string;
  readonly commandPort: number;
  readonly queryPort: number;
  /** Where traces go (an empty endpoint: nowhere) and how many are kept. */
  readonly tracing: { readonly endpoint: string; readonly sampleRatio: number };
  /** Where each service serves its Prometheus metrics; undefined: it does not. */
  readonly commandMetricsPort: number | undefined;
  readonly queryMetricsPort: number | undefined;
  readonly databaseUrl: string;
  /** The query side reads the event log through this URL (a read-only role in production). */
  readonly queryDatabaseUrl: string;
  /** The command service migrates through this URL, then serves through `databaseUrl`. */
  readonly migrationDatabaseUrl: string;
  readonly postgres: PostgresSessionConfig;
  readonly redisUrl: string;
  /** Seed nodes of a Redis Cluster; empty: one Redis at `redisUrl` (shared/redis/connect.ts). */
  readonly redisClusterNodes: readonly HostPort[];
  /** Every Redis key and channel starts with this, so deployments can share one Redis. */
  readonly redisKeyPrefix: string;
  readonly readModelPartitions: number;
  /** Metadata keys lists may filter on (an index each per status). */
  readonly indexedMetadataKeys: readonly string[];
  /** Whether the query side follows Redis keyspace events to repair lost keys (redis/lost-keys.ts). */
  readonly redisKeyspaceEvents: boolean;
  /** Whether the query side runs on a Redis that evicts keys (see redis/memory-policy.ts). */
  readonly redisAllowEviction: boolean;
  readonly s3: S3Config;
  readonly outputUrls: OutputUrlConfig;
  readonly blobFallback: BlobFallbackConfig;
  readonly orphans: OrphanSweepConfig;
  readonly retention: RetentionConfig;
  readonly limits: Limits;
  readonly streams: StreamConfig;
  /** How often the query side polls the event log when pub/sub is quiet. */
  readonly catchUpIntervalMs: number;
  readonly shutdownGraceMs: number;
  /** Commands the command service runs at once; more wait in its admission queue. */
  readonly maxPendingCommands: number;
  /** Commands waiting past those before more are refused (UNAVAILABLE with a retry delay). */
  readonly maxQueuedCommands: number;
  /** Evaluations whose latest state the command service keeps as the first guess of their next command (0: none). */
  readonly commandStateCacheEntries: number;
  readonly executors: ExecutorConfig;
  readonly auth: AuthConfig;
  readonly identityLimits: IdentityLimits;
  readonly transport: TransportConfig;
  /** Whether gRPC reflection is served. */
  readonly reflection: boolean;
}

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * Every setting of SETTINGS parsed from `env`, or the problems found: a missing required
 * setting, a value its parser refuses ("KEY must …, not "value"").
 */
function parseSettings(env: Env): { values: SettingValues; problems: string[] } {
  const problems: string[] = [];
  const values: Partial<Record<SettingKey, unknown>> = {};
  const given = (key: string): string | undefined => (env[key] !== undefined && env[key] !== '' ? env[key] : undefined);

  const parseOne = (key: SettingKey, environment: Environment): void => {
    const { parser } = SETTINGS[key] as Setting<unknown>;
    const raw = given(key);
    const byDefault = defaultIn(key, environment);
    const fallback = byDefault === REQUIRED ? undefined : byDefault;
    if (raw === undefined && byDefault === REQUIRED) {
      problems.push(`${key} is required when ENVIRONMENT=${environment}`);
      return;
    }
    const text = raw ?? fallback;
    if (text === undefined) return; // derived below
    try {
      values[key] = parser.parse(text);
    } catch (err) {
      if (!(err instanceof Problem)) throw err;
      problems.push(`${key} must ${err.message}, not "${parser.shown?.(text) ?? text}"`);
      // A broken value still lets the rest be checked: the default stands in for it.
      if (fallback !== undefined && raw !== undefined) values[key] = parser.parse(fallback);
    }
  };

  parseOne('ENVIRONMENT', 'development');
  const environment = (values.ENVIRONMENT as Environment | undefined) ?? 'development';
  for (const key of Object.keys(SETTINGS) as SettingKey[]) if (key !== 'ENVIRONMENT') parseOne(key, environment);
  values.QUERY_DATABASE_URL ??= values.DATABASE_URL ?? '';
  values.MIGRATION_DATABASE_URL ??= values.DATABASE_URL ?? '';
  if ((values.S3_ACCESS_KEY_ID === '') !== (values.S3_SECRET_ACCESS_KEY === '')) {
    problems.push('S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together');
  }
  const partBytes = values.S3_PART_BYTES as number | undefined;
  if (environment === 'production' && partBytes !== undefined && partBytes < 5 * 1024 * 1024) {
    problems.push(`S3_PART_BYTES must be at least 5 MiB (S3's smallest part) in production, not ${partBytes}`);
  }
  if (values.S3_SSE_KMS_KEY_ID !== '' && values.S3_SSE !== 'aws:kms') {
    problems.push('S3_SSE_KMS_KEY_ID is set but S3_SSE is not aws:kms: set S3_SSE=aws:kms or unset the key id');
  }
  const defaultExpiry = values.OUTPUT_URL_DEFAULT_EXPIRY_SECONDS as number | undefined;
  const maxExpiry = values.OUTPUT_URL_MAX_EXPIRY_SECONDS as number | undefined;
  if (defaultExpiry !== undefined && maxExpiry !== undefined && defaultExpiry > maxExpiry) {
    problems.push(
      `OUTPUT_URL_DEFAULT_EXPIRY_SECONDS (${defaultExpiry}) must not exceed OUTPUT_URL_MAX_EXPIRY_SECONDS (${maxExpiry})`,
    );
  }
  const active = values.ACTIVE_RETENTION as number | undefined;
  for (const grace of ['METRICS_AFTER_TERMINAL_SECONDS', 'LOGS_AFTER_TERMINAL_SECONDS'] as const) {
    const seconds = values[grace] as number | undefined;
    if (active !== undefined && seconds !== undefined && active <= seconds * 1000)
      problems.push(`ACTIVE_RETENTION must exceed ${grace}: an archived evaluation takes no more writes`);
  }
  const logHot = values.LOG_HOT_RETENTION as number | undefined;
  const logKept = values.LOG_RETENTION as number | undefined;
  if (logHot !== undefined && logKept !== undefined && logHot > logKept) {
    problems.push('LOG_HOT_RETENTION must not exceed LOG_RETENTION (logs move to S3 before they are deleted)');
  }
  const clusterNodes = values.REDIS_CLUSTER_NODES as readonly HostPort[] | undefined;
  const redisUrl = values.REDIS_URL as string | undefined;
  if (clusterNodes !== undefined && clusterNodes.length > 0 && redisUrl !== undefined) {
    const database = new URL(redisUrl).pathname.replace(/^\//, '');
    if (database !== '' && database !== '0')
      problems.push(
        `REDIS_URL must name database 0 (or none) with REDIS_CLUSTER_NODES: a Redis Cluster has no other, not ${database}`,
      );
  }
  problems.push(...securityProblems(values, environment));
  return { values: values as SettingValues, problems };
}

/** The settings of authentication and transport that only make sense together. */
function securityProblems(values: Partial<Record<SettingKey, unknown>>, environment: Environment): string[] {
  const problems: string[] = [];
  const unset = (key: SettingKey): boolean => values[key] === '' || values[key] === undefined;
  const mode = values.AUTH_MODE;
  if (mode === 'none' && environment === 'production') {
    problems.push('AUTH_MODE=none is refused in production: set AUTH_MODE=jwt or AUTH_MODE=mtls (docs/security.md)');
  }
  if (mode === 'jwt') {
    for (const key of ['AUTH_JWT_KEYS_FILE', 'AUTH_JWT_ISSUER', 'AUTH_JWT_AUDIENCE'] as const) {
      if (unset(key)) problems.push(`${key} is required when AUTH_MODE=jwt`);
    }
  }
  if (mode === 'mtls') {
    if (unset('AUTH_MTLS_IDENTITIES_FILE')) problems.push('AUTH_MTLS_IDENTITIES_FILE is required when AUTH_MODE=mtls');
    if (unset('TLS_CLIENT_CA_FILE')) {
      problems.push('TLS_CLIENT_CA_FILE is required when AUTH_MODE=mtls: clients are known by their certificates');
    }
  }
  if (unset('TLS_CERT_FILE') !== unset('TLS_KEY_FILE'))
    problems.push('TLS_CERT_FILE and TLS_KEY_FILE must be set together');
  if (!unset('TLS_CLIENT_CA_FILE') && unset('TLS_CERT_FILE')) {
    problems.push(
      'TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE: client certificates are asked for over TLS',
    );
  }
  if (unset('TLS_CERT_FILE') && values.ALLOW_PLAINTEXT === false) {
    problems.push('set TLS_CERT_FILE and TLS_KEY_FILE, or ALLOW_PLAINTEXT=true to serve without TLS');
  }
  return problems;
}

function authOf(v: SettingValues): AuthConfig {
  if (v.AUTH_MODE === 'jwt') {
    return {
      mode: 'jwt',
      keysFile: v.AUTH_JWT_KEYS_FILE,
      issuer: v.AUTH_JWT_ISSUER,
      audience: v.AUTH_JWT_AUDIENCE,
      rolesClaim: v.AUTH_JWT_ROLES_CLAIM,
      tenantClaim: v.AUTH_JWT_TENANT_CLAIM,
    };
  }
  if (v.AUTH_MODE === 'mtls') return { mode: 'mtls', identitiesFile: v.AUTH_MTLS_IDENTITIES_FILE };
  return { mode: 'none' };
}

function transportOf(v: SettingValues): TransportConfig {
  if (v.TLS_CERT_FILE === '') return { kind: 'plaintext' };
  return { kind: 'tls', certFile: v.TLS_CERT_FILE, keyFile: v.TLS_KEY_FILE, clientCaFile: v.TLS_CLIENT_CA_FILE };
}

function sseOf(v: SettingValues): ServerSideEncryption {
  if (v.S3_SSE === 'aws:kms') return { kind: 'aws:kms', keyId: v.S3_SSE_KMS_KEY_ID };
  return { kind: v.S3_SSE };
}

function postgresSessionOf(v: SettingValues): PostgresSessionConfig {
  return Object.freeze({
    statementTimeoutMs: v.PG_STATEMENT_TIMEOUT_MS,
    lockTimeoutMs: v.PG_LOCK_TIMEOUT_MS,
    idleInTransactionTimeoutMs: v.PG_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    keepAliveDelayMs: v.PG_KEEPALIVE_DELAY_MS,
    migrationStatementTimeoutMs: v.PG_MIGRATION_STATEMENT_TIMEOUT_MS,
  });
}

/**
 * The PostgreSQL session settings at their defaults (the same in every environment), for code
 * that opens sessions without a Config (the stack tool, test set-up). Parsed from the table, so
 * the defaults are still written once.
 */
export function defaultPostgresSession(): PostgresSessionConfig {
  return postgresSessionOf(parseSettings({ ENVIRONMENT: 'test' }).values);
}

function multipartOf(v: SettingValues): MultipartConfig {
  return Object.freeze({
    thresholdBytes: v.S3_MULTIPART_THRESHOLD_BYTES,
    partBytes: v.S3_PART_BYTES,
    partsInFlight: v.S3_PARTS_IN_FLIGHT,
  });
}

/** Multipart uploads at their defaults, for a store made without a Config (tests, tools). */
export function defaultMultipart(): MultipartConfig {
  return multipartOf(parseSettings({ ENVIRONMENT: 'test' }).values);
}

/** Reads and validates the whole configuration; throws one ConfigError listing every problem. */
export function loadConfig(env: Env): Config {
  const { values: v, problems } = parseSettings(env);
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze({
    environment: v.ENVIRONMENT,
    logLevel: v.LOG_LEVEL,
    host: v.HOST,
    commandPort: v.COMMAND_PORT,
    queryPort: v.QUERY_PORT,
    tracing: { endpoint: v.OTEL_EXPORTER_OTLP_ENDPOINT, sampleRatio: v.TRACE_SAMPLE_RATIO },
    commandMetricsPort: v.COMMAND_METRICS_PORT,
    queryMetricsPort: v.QUERY_METRICS_PORT,
    databaseUrl: v.DATABASE_URL,
    queryDatabaseUrl: v.QUERY_DATABASE_URL,
    migrationDatabaseUrl: v.MIGRATION_DATABASE_URL,
    postgres: postgresSessionOf(v),
    redisUrl: v.REDIS_URL,
    redisClusterNodes: v.REDIS_CLUSTER_NODES,
    redisKeyPrefix: v.REDIS_KEY_PREFIX,
    readModelPartitions: v.READ_MODEL_PARTITIONS,
    indexedMetadataKeys: v.INDEXED_METADATA_KEYS,
    redisAllowEviction: v.REDIS_ALLOW_EVICTION,
    redisKeyspaceEvents: v.REDIS_KEYSPACE_EVENTS,
    s3: Object.freeze({
      endpoint: v.S3_ENDPOINT,
      bucket: v.S3_BUCKET,
      region: v.S3_REGION,
      accessKeyId: v.S3_ACCESS_KEY_ID,
      secretAccessKey: v.S3_SECRET_ACCESS_KEY,
      forcePathStyle: v.S3_FORCE_PATH_STYLE,
      checksumMode: v.S3_CHECKSUM_MODE,
      publicEndpoint: v.S3_PUBLIC_ENDPOINT,
      sse: Object.freeze(sseOf(v)),
      multipart: multipartOf(v),
    }),
    blobFallback: Object.freeze({
      dir: v.BLOB_FALLBACK_DIR,
      retryPrimaryAfterMs: v.BLOB_FALLBACK_RETRY_MS,
      moverIntervalMs: v.BLOB_MOVER_INTERVAL_MS,
    }),
    orphans: Object.freeze({
      graceMs: v.ORPHAN_GRACE_SECONDS * 1000,
      intervalMs: v.ORPHAN_SWEEP_INTERVAL_SECONDS * 1000,
    }),
    retention: Object.freeze({
      hotMs: v.HOT_RETENTION,
      hotSweepIntervalMs: v.HOT_SWEEP_INTERVAL_SECONDS * 1000,
      activeMs: v.ACTIVE_RETENTION,
      logHotMs: v.LOG_HOT_RETENTION,
      logMs: v.LOG_RETENTION,
      securityMs: v.SECURITY_RETENTION,
      intervalMs: v.RETENTION_INTERVAL_SECONDS * 1000,
    }),
    outputUrls: Object.freeze({
      defaultExpirySeconds: v.OUTPUT_URL_DEFAULT_EXPIRY_SECONDS,
      maxExpirySeconds: v.OUTPUT_URL_MAX_EXPIRY_SECONDS,
      uploadExpirySeconds: v.UPLOAD_EXPIRY_SECONDS,
    }),
    limits: Object.freeze({
      maxCodeBytes: v.MAX_CODE_BYTES,
      maxOutputBytes: v.MAX_OUTPUT_BYTES,
      maxStreamedOutputBytes: v.MAX_STREAMED_OUTPUT_BYTES,
      clientStreamIdleMs: v.CLIENT_STREAM_IDLE_MS,
      maxMetadataBytes: v.MAX_METADATA_BYTES,
      maxMetricsPerCall: v.MAX_METRICS_PER_CALL,
      maxMetricNames: v.MAX_METRIC_NAMES,
      metricsAfterTerminalMs: v.METRICS_AFTER_TERMINAL_SECONDS * 1000,
      logFlushMs: v.LOG_FLUSH_MS,
      logSegmentMaxBytes: v.LOG_SEGMENT_MAX_BYTES,
      logsAfterTerminalMs: v.LOGS_AFTER_TERMINAL_SECONDS * 1000,
      maxTimeoutSeconds: v.MAX_TIMEOUT_SECONDS,
      evalIdPattern: v.EVAL_ID_PATTERN,
      languages: v.LANGUAGES,
      engines: v.ENGINES,
      previewBytes: v.PREVIEW_BYTES,
      inlineOutputMaxBytes: v.INLINE_OUTPUT_MAX_BYTES,
      inlineCodeMaxBytes: v.CODE_INLINE_MAX_BYTES,
      maxRequestBytesInFlight: v.MAX_REQUEST_BYTES_IN_FLIGHT,
      requestReadTimeoutMs: v.REQUEST_READ_TIMEOUT_MS,
      connectionIdleMs: v.CONNECTION_IDLE_MS,
    }),
    streams: Object.freeze({
      progressIntervalMs: v.STREAM_PROGRESS_INTERVAL_MS,
      bufferLimit: v.STREAM_BUFFER_LIMIT,
      changeLogRetention: v.CHANGE_LOG_RETENTION,
      maxOpen: v.MAX_STREAMS,
      maxOpenPerConnection: v.MAX_STREAMS_PER_CONNECTION,
    }),
    catchUpIntervalMs: v.CATCH_UP_INTERVAL_MS,
    shutdownGraceMs: v.SHUTDOWN_GRACE_MS,
    maxPendingCommands: v.MAX_PENDING_COMMANDS,
    maxQueuedCommands: v.MAX_QUEUED_COMMANDS,
    commandStateCacheEntries: v.COMMAND_STATE_CACHE_ENTRIES,
    executors: Object.freeze({
      healthTtlSeconds: v.EXECUTOR_HEALTH_TTL_SECONDS,
      lostGraceSeconds: v.EXECUTOR_LOST_GRACE_SECONDS,
    }),
    auth: Object.freeze(authOf(v)),
    identityLimits: Object.freeze({
      requestsPerSecond: v.AUTH_REQUESTS_PER_SECOND,
      burst: v.AUTH_BURST,
      maxStreams: v.AUTH_MAX_STREAMS,
    }),
    transport: Object.freeze(transportOf(v)),
    reflection: v.GRPC_REFLECTION,
  });
}
