export { loadConfig, ConfigError, defaultMultipart, defaultPostgresSession } from './config';
export type {
  AuthConfig,
  IdentityLimits,
  TransportConfig,
  Config,
  Environment,
  HostPort,
  ExecutorConfig,
  LogLevel,
  MultipartConfig,
  Limits,
  PostgresSessionConfig,
  BlobFallbackConfig,
  OrphanSweepConfig,
  RetentionConfig,
  OutputUrlConfig,
  S3Config,
  ServerSideEncryption,
  StreamConfig,
  ChecksumMode,
} from './config';
export { formatHostPort, SETTINGS, settingsHelp, settingsTable } from './settings';
