export { loadConfig, ConfigError, defaultPostgresSession } from './config';
export type {
  Config,
  Environment,
  ExecutorConfig,
  LogLevel,
  Limits,
  PostgresSessionConfig,
  S3Config,
  StreamConfig,
  ChecksumMode,
} from './config';
export { SETTINGS, settingsHelp, settingsTable } from './settings';
