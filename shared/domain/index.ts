export * from './events';
export { canTransition, isTerminal, STATUSES } from './status';
export type { Status } from './status';
export { evolve, ProjectionError, STATUS_TO_PROTO, EVENT_TYPE_TO_PROTO } from './evolve';
export { EVAL_ID_MAX_LENGTH, DEFAULT_EVAL_ID_PATTERN, evalIdViolation } from './eval-id';
