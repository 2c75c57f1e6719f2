export { createTracing, NO_TRACING } from './tracing';
export type { CallSpan, Tracing } from './tracing';
