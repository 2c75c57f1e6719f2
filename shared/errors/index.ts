export {
  CrucibleError,
  ValidationError,
  NotFoundError,
  AlreadyExistsError,
  IllegalTransitionError,
  RevisionConflictError,
  UnavailableError,
  OutOfRangeError,
  DeadlineError,
  SlowConsumerError,
  validationErrorOf,
} from './errors';
export type { FieldViolation } from './errors';
