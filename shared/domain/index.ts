export * from './events';
export {
  canTransition,
  endingEvent,
  isTerminal,
  isTerminalProto,
  parseStatus,
  statusOfProto,
  statusToProto,
  STATUSES,
} from './status';
export type { Status } from './status';
export { evolve, ProjectionError, EVENT_TYPE_TO_PROTO } from './evolve';
export { SEVERITY_TO_PROTO, severityOfProto, VIOLATION_KIND_TO_PROTO, violationKindOfProto } from './security';
export { EVAL_ID_MAX_LENGTH, DEFAULT_EVAL_ID_PATTERN, evalIdViolation } from './eval-id';
export { foldMetrics, summarizeBatch } from './metrics';
export { compareCodeUnits } from './order';
export { LOG_STREAM_TO_PROTO, logStreamOfProto, logStreamViolation } from './logs';
export type { MetricPoint } from './metrics';
export { hasNul, nulViolation } from './text';
export { ALL_TENANTS, DEFAULT_TENANT, TENANT_PATTERN, tenantOrDefault } from './tenants';
