export { retryAtStartup, closeAll, onShutdownSignal, onReloadSignal, exitOnFailure, helpText } from './lifecycle';
export type { Closeable } from './lifecycle';
export { createPeriodic } from './periodic';
export type { Periodic } from './periodic';
