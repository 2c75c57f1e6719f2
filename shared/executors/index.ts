export { executorKeys } from './keys';
export type { ExecutorKeys } from './keys';
export { encodeExecutorHealth, decodeExecutorHealth } from './codec';
export { healthReportViolations, validateExecutorHealth } from './validate';
export type { UncheckedReport } from './validate';
export {
  EXECUTOR_STATES,
  executorStateOfProto,
  executorStateToProto,
  MAX_EXECUTOR_ID,
  MAX_EXECUTOR_METRIC_NAME,
  MAX_EXECUTOR_METRICS,
  MAX_EXECUTOR_VERSION,
} from './report';
export type { ExecutorHealthReport, ExecutorState, StoredExecutorHealth } from './report';
