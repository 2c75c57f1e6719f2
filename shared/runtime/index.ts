export { retryAtStartup, closeAll, onShutdownSignal, exitOnFailure, helpText } from './lifecycle';
export type { Closeable } from './lifecycle';
