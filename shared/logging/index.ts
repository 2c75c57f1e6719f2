export { createLogger, silentLogger } from './logger';
export type { Logger, LogFields } from './logger';
