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
  UnauthenticatedError,
  PermissionDeniedError,
  validationErrorOf,
} from './errors';
export type { FieldViolation } from './errors';
