export { loadConfig, ConfigError, CONFIG_KEYS } from './config';
export type { Config, Environment, LogLevel, Limits, S3Config, StreamConfig, ChecksumMode } from './config';
