/**
 * Configuration of both services, read once at start-up from environment variables.
 *
 * `loadConfig(env)` checks every key and reports all problems at once, so that a person can
 * fix a deployment in one pass. Only `main.ts` files pass `process.env`; tests pass objects.
 */

export type Environment = 'development' | 'test' | 'production';
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
}

export interface Limits {
  readonly maxCodeBytes: number;
  readonly maxOutputBytes: number;
  /** Largest output CompleteEvaluationStream accepts (it never holds one whole in memory). */
  readonly maxStreamedOutputBytes: number;
  readonly maxMetadataBytes: number;
  readonly maxTimeoutSeconds: number;
  readonly evalIdPattern: RegExp;
  readonly languages: readonly string[];
  readonly engines: readonly string[];
  /** How many leading bytes of an output or error are kept as a preview on the row. */
  readonly previewBytes: number;
  /** Bodies up to this size are kept in PostgreSQL, larger ones in S3. */
  readonly inlineOutputMaxBytes: number;
}

export interface StreamConfig {
  readonly progressIntervalMs: number;
  /** Live messages a stream may hold for a slow client before it falls back to catch-up reads. */
  readonly bufferLimit: number;
  /** Entries kept in the replayable change log in Redis (per partition). */
  readonly changeLogRetention: number;
}

export interface Config {
  readonly environment: Environment;
  readonly logLevel: LogLevel;
  readonly host: string;
  readonly commandPort: number;
  readonly queryPort: number;
  readonly databaseUrl: string;
  /** The query side reads the event log through this URL (a read-only role in production). */
  readonly queryDatabaseUrl: string;
  readonly redisUrl: string;
  /** Every Redis key and channel starts with this, so deployments can share one Redis. */
  readonly redisKeyPrefix: string;
  readonly readModelPartitions: number;
  readonly s3: S3Config;
  readonly limits: Limits;
  readonly streams: StreamConfig;
  /** How often the query side polls the event log when pub/sub is quiet. */
  readonly catchUpIntervalMs: number;
  readonly shutdownGraceMs: number;
  /** Commands the command service runs at once before it refuses more (UNAVAILABLE). */
  readonly maxPendingCommands: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

const LOCAL_DEFAULTS = {
  DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/crucible',
  REDIS_URL: 'redis://127.0.0.1:6379/0',
  S3_ENDPOINT: 'http://127.0.0.1:4569',
  S3_BUCKET: 'crucible-outputs',
  S3_ACCESS_KEY_ID: 'S3RVER',
  S3_SECRET_ACCESS_KEY: 'S3RVER',
  S3_FORCE_PATH_STYLE: 'true',
  S3_CHECKSUM_MODE: 'WHEN_REQUIRED',
} as const;

/** Per-environment defaults: local services for development and test, nothing for production. */
const PRESETS: Record<Environment, Readonly<Record<string, string>>> = {
  development: { ...LOCAL_DEFAULTS, LOG_LEVEL: 'debug', HOST: '127.0.0.1' },
  test: { ...LOCAL_DEFAULTS, LOG_LEVEL: 'info', HOST: '127.0.0.1' },
  production: { LOG_LEVEL: 'info', HOST: '0.0.0.0', S3_FORCE_PATH_STYLE: 'false', S3_CHECKSUM_MODE: 'WHEN_SUPPORTED' },
};

const DEFAULT_LANGUAGES = 'python,javascript,typescript,bash,ruby,go,rust,java,c,cpp';
const DEFAULT_ENGINES = 'docker,gvisor,firecracker,kubernetes,local';

/** Documented here once; `--help` and the README print this table. */
export const CONFIG_KEYS: readonly { key: string; help: string }[] = [
  { key: 'ENVIRONMENT', help: 'development | test | production (default development); picks the defaults below' },
  {
    key: 'DATABASE_URL',
    help: `PostgreSQL URL (dev/test default ${LOCAL_DEFAULTS.DATABASE_URL}; required in production)`,
  },
  { key: 'QUERY_DATABASE_URL', help: 'PostgreSQL URL the query side reads the event log with (default DATABASE_URL)' },
  { key: 'REDIS_URL', help: `Redis URL (dev/test default ${LOCAL_DEFAULTS.REDIS_URL}; required in production)` },
  { key: 'REDIS_KEY_PREFIX', help: 'prefix of every Redis key and channel (default crucible)' },
  { key: 'READ_MODEL_PARTITIONS', help: 'read-model partitions (Redis Cluster hash tags), 1-1024 (default 1)' },
  {
    key: 'S3_ENDPOINT',
    help: `S3 API endpoint (dev/test default ${LOCAL_DEFAULTS.S3_ENDPOINT}; production default AWS)`,
  },
  {
    key: 'S3_BUCKET',
    help: `bucket for large outputs (dev/test default ${LOCAL_DEFAULTS.S3_BUCKET}; required in production)`,
  },
  { key: 'S3_REGION', help: 'S3 region (default us-east-1)' },
  {
    key: 'S3_ACCESS_KEY_ID',
    help: 'S3 access key (dev/test default S3RVER; production default: SDK credential chain)',
  },
  { key: 'S3_SECRET_ACCESS_KEY', help: 'S3 secret key (set together with S3_ACCESS_KEY_ID)' },
  { key: 'S3_FORCE_PATH_STYLE', help: 'true for s3rver/MinIO-style servers (dev/test default true, production false)' },
  { key: 'S3_CHECKSUM_MODE', help: 'WHEN_REQUIRED (s3rver) | WHEN_SUPPORTED (AWS; production default)' },
  { key: 'HOST', help: 'interface both services bind (dev/test default 127.0.0.1, production 0.0.0.0)' },
  { key: 'COMMAND_PORT', help: 'command service port (default 50051; 0 picks a free one)' },
  { key: 'QUERY_PORT', help: 'query service port (default 50052; 0 picks a free one)' },
  { key: 'LOG_LEVEL', help: 'debug | info | warn | error (development debug, otherwise info)' },
  { key: 'MAX_CODE_BYTES', help: 'largest accepted code (default 1048576)' },
  { key: 'MAX_OUTPUT_BYTES', help: 'largest accepted output or error in one message (default 16777216)' },
  {
    key: 'MAX_STREAMED_OUTPUT_BYTES',
    help: 'largest output CompleteEvaluationStream accepts (default 1073741824; at most 5 GiB, one S3 PutObject)',
  },
  { key: 'MAX_METADATA_BYTES', help: 'largest accepted metadata, as JSON (default 65536)' },
  { key: 'MAX_TIMEOUT_SECONDS', help: 'largest accepted timeout_seconds (default 3600)' },
  {
    key: 'EVAL_ID_PATTERN',
    help: 'regular expression a client-chosen eval_id must match (default ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$)',
  },
  { key: 'LANGUAGES', help: `comma-separated known languages (default ${DEFAULT_LANGUAGES})` },
  { key: 'ENGINES', help: `comma-separated known engines (default ${DEFAULT_ENGINES})` },
  { key: 'PREVIEW_BYTES', help: 'bytes of output/error kept as a preview (default 1024)' },
  {
    key: 'INLINE_OUTPUT_MAX_BYTES',
    help: 'bodies up to this size stay in PostgreSQL, larger go to S3 (default 1048576)',
  },
  { key: 'STREAM_PROGRESS_INTERVAL_MS', help: 'how often streams send a progress message (default 5000)' },
  {
    key: 'STREAM_BUFFER_LIMIT',
    help: 'live messages buffered for a slow stream client before it falls back to catch-up (default 1000)',
  },
  { key: 'CHANGE_LOG_RETENTION', help: 'changes kept replayable in Redis per partition (default 1000000)' },
  {
    key: 'CATCH_UP_INTERVAL_MS',
    help: 'how often the query side polls the event log when pub/sub is quiet (default 1000)',
  },
  { key: 'SHUTDOWN_GRACE_MS', help: 'how long in-flight calls may run after SIGTERM (default 10000)' },
  {
    key: 'MAX_PENDING_COMMANDS',
    help: 'commands the command service runs at once; more are refused with UNAVAILABLE (default 256; a streamed output counts once its bytes are in)',
  },
];

type Env = Readonly<Record<string, string | undefined>>;

/** Reads and validates the whole configuration; throws one ConfigError listing every problem. */
export function loadConfig(env: Env): Config {
  const problems: string[] = [];
  const rawEnvironment = env.ENVIRONMENT ?? 'development';
  let environment: Environment = 'development';
  if (rawEnvironment === 'development' || rawEnvironment === 'test' || rawEnvironment === 'production') {
    environment = rawEnvironment;
  } else {
    problems.push(`ENVIRONMENT must be development, test or production, not "${rawEnvironment}"`);
  }
  const preset = PRESETS[environment];
  const get = (key: string): string | undefined => {
    const value = env[key];
    return value !== undefined && value !== '' ? value : preset[key];
  };
  const required = (key: string): string => {
    const value = get(key);
    if (value === undefined) {
      problems.push(`${key} is required when ENVIRONMENT=${environment}`);
      return '';
    }
    return value;
  };
  const int = (key: string, fallback: number, min: number, max: number): number => {
    const raw = get(key);
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      problems.push(`${key} must be a whole number from ${min} to ${max}, not "${raw}"`);
      return fallback;
    }
    return value;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const raw = get(key);
    if (raw === undefined) return fallback;
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    problems.push(`${key} must be true or false, not "${raw}"`);
    return fallback;
  };
  const url = (key: string, protocols: readonly string[]): string => {
    const value = required(key);
    if (value === '') return value;
    try {
      const parsed = new URL(value);
      if (!protocols.includes(parsed.protocol)) {
        problems.push(
          `${key} must start with ${protocols.map((p) => `${p}//`).join(' or ')}, not "${parsed.protocol}"`,
        );
      }
    } catch {
      problems.push(`${key} is not a valid URL: "${value}"`);
    }
    return value;
  };
  const list = (key: string, fallback: string): readonly string[] => {
    const items = (get(key) ?? fallback)
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    if (items.length === 0) problems.push(`${key} must list at least one value`);
    return Object.freeze(items);
  };

  const logLevel = get('LOG_LEVEL') ?? 'info';
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) {
    problems.push(`LOG_LEVEL must be debug, info, warn or error, not "${logLevel}"`);
  }
  const checksumMode = get('S3_CHECKSUM_MODE') ?? 'WHEN_SUPPORTED';
  if (checksumMode !== 'WHEN_REQUIRED' && checksumMode !== 'WHEN_SUPPORTED') {
    problems.push(`S3_CHECKSUM_MODE must be WHEN_REQUIRED or WHEN_SUPPORTED, not "${checksumMode}"`);
  }
  let evalIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
  const rawPattern = get('EVAL_ID_PATTERN');
  if (rawPattern !== undefined) {
    try {
      evalIdPattern = new RegExp(rawPattern);
    } catch {
      problems.push(`EVAL_ID_PATTERN is not a valid regular expression: "${rawPattern}"`);
    }
  }
  const accessKeyId = get('S3_ACCESS_KEY_ID') ?? '';
  const secretAccessKey = get('S3_SECRET_ACCESS_KEY') ?? '';
  if ((accessKeyId === '') !== (secretAccessKey === '')) {
    problems.push('S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together');
  }
  const s3Endpoint = get('S3_ENDPOINT') ?? '';
  if (s3Endpoint !== '') {
    try {
      new URL(s3Endpoint);
    } catch {
      problems.push(`S3_ENDPOINT is not a valid URL: "${s3Endpoint}"`);
    }
  }
  const databaseUrl = url('DATABASE_URL', ['postgres:', 'postgresql:']);
  const queryDatabaseUrl =
    get('QUERY_DATABASE_URL') === undefined ? databaseUrl : url('QUERY_DATABASE_URL', ['postgres:', 'postgresql:']);
  const redisKeyPrefix = get('REDIS_KEY_PREFIX') ?? 'crucible';
  if (!/^[A-Za-z0-9:_.-]{1,64}$/.test(redisKeyPrefix)) {
    problems.push(`REDIS_KEY_PREFIX must be 1-64 characters of [A-Za-z0-9:_.-], not "${redisKeyPrefix}"`);
  }
  const previewBytes = int('PREVIEW_BYTES', 1024, 0, 65536);
  const maxOutputBytes = int('MAX_OUTPUT_BYTES', 16 * 1024 * 1024, 0, 1024 * 1024 * 1024);

  const config: Config = {
    environment,
    logLevel: logLevel as LogLevel,
    host: get('HOST') ?? '127.0.0.1',
    commandPort: int('COMMAND_PORT', 50051, 0, 65535),
    queryPort: int('QUERY_PORT', 50052, 0, 65535),
    databaseUrl,
    queryDatabaseUrl,
    redisUrl: url('REDIS_URL', ['redis:', 'rediss:']),
    redisKeyPrefix,
    readModelPartitions: int('READ_MODEL_PARTITIONS', 1, 1, 1024),
    s3: Object.freeze({
      endpoint: s3Endpoint,
      bucket: required('S3_BUCKET'),
      region: get('S3_REGION') ?? 'us-east-1',
      accessKeyId,
      secretAccessKey,
      forcePathStyle: bool('S3_FORCE_PATH_STYLE', false),
      checksumMode: checksumMode as ChecksumMode,
    }),
    limits: Object.freeze({
      maxCodeBytes: int('MAX_CODE_BYTES', 1024 * 1024, 1, 64 * 1024 * 1024),
      maxOutputBytes,
      maxStreamedOutputBytes: int('MAX_STREAMED_OUTPUT_BYTES', 1024 * 1024 * 1024, 0, 5 * 1024 * 1024 * 1024),
      maxMetadataBytes: int('MAX_METADATA_BYTES', 64 * 1024, 0, 16 * 1024 * 1024),
      maxTimeoutSeconds: int('MAX_TIMEOUT_SECONDS', 3600, 1, 7 * 24 * 3600),
      evalIdPattern,
      languages: list('LANGUAGES', DEFAULT_LANGUAGES),
      engines: list('ENGINES', DEFAULT_ENGINES),
      previewBytes,
      inlineOutputMaxBytes: int('INLINE_OUTPUT_MAX_BYTES', 1024 * 1024, 0, 64 * 1024 * 1024),
    }),
    streams: Object.freeze({
      progressIntervalMs: int('STREAM_PROGRESS_INTERVAL_MS', 5000, 10, 3_600_000),
      bufferLimit: int('STREAM_BUFFER_LIMIT', 1000, 1, 1_000_000),
      changeLogRetention: int('CHANGE_LOG_RETENTION', 1_000_000, 100, 1_000_000_000),
    }),
    catchUpIntervalMs: int('CATCH_UP_INTERVAL_MS', 1000, 10, 3_600_000),
    shutdownGraceMs: int('SHUTDOWN_GRACE_MS', 10_000, 0, 600_000),
    maxPendingCommands: int('MAX_PENDING_COMMANDS', 256, 1, 1_000_000),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}
