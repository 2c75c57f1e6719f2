export { loadConfig, ConfigError } from './config';
export type { Config, Environment, LogLevel, Limits, S3Config, StreamConfig, ChecksumMode } from './config';
export { SETTINGS, settingsHelp, settingsTable } from './settings';
