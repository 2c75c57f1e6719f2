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
  validationErrorOf,
} from './errors';
export type { FieldViolation } from './errors';
