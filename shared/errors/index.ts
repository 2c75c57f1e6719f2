export {
  CrucibleError,
  ValidationError,
  NotFoundError,
  AlreadyExistsError,
  IllegalTransitionError,
  FailedPreconditionError,
  RevisionConflictError,
  UnavailableError,
  CommitOutcomeUnknownError,
  OutOfRangeError,
  DeadlineError,
  ResourceExhaustedError,
  validationErrorOf,
} from './errors';
export type { FieldViolation } from './errors';
