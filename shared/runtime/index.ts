export { retryAtStartup, closeAll, onShutdownSignal, exitOnFailure, helpText } from './lifecycle';
export type { Closeable } from './lifecycle';
export { createPeriodic } from './periodic';
export type { Periodic } from './periodic';
