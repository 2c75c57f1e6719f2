export { loadConfig, ConfigError, defaultPostgresSession } from './config';
export type {
  Config,
  Environment,
  ExecutorConfig,
  LogLevel,
  Limits,
  PostgresSessionConfig,
  BlobFallbackConfig,
  OrphanSweepConfig,
  OutputUrlConfig,
  S3Config,
  ServerSideEncryption,
  StreamConfig,
  ChecksumMode,
} from './config';
export { SETTINGS, settingsHelp, settingsTable } from './settings';
