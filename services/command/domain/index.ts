export type {
  Command,
  CommandResult,
  EvaluationCommand,
  SubmitEvaluation,
  StartEvaluation,
  CompleteEvaluation,
  FailEvaluation,
  CancelEvaluation,
  RecordMetrics,
  RecordSecurityEvent,
  AppendLogSegment,
  MoveBlob,
  ReportedMetricPoint,
  SecurityReport,
} from './commands';
export { commandHash } from './command-hash';
export { contentDigest, memoizeDigest, planBody, relocatedPlan, utf8Prefix, UploadedOutput } from './bodies';
export type { BodyPlan, BodyLimits, Digest } from './bodies';
export { checkActsAsItself, checkBoundExecutor, decideSubmit, decideChange, logGap } from './decide';
export type { Decision, DecisionContext, EvaluationSnapshot, LoggedCommand, LogRules, MetricRules } from './decide';
export {
  validateSubmit,
  validateStart,
  validateComplete,
  validateCompleteHeader,
  validateFail,
  validateCancel,
  validateRecordMetrics,
  validateRecordSecurityEvent,
  validateLogsHeader,
  validateLogChunk,
  validateCreateUpload,
  validateCompleteUploaded,
} from './validate';
export type { CompletionHeader, LogsTarget, UploadedCompletion } from './validate';
