export { createSubmitEvaluation } from './submit-evaluation';
export { createStartEvaluation } from './start-evaluation';
export { createCompleteEvaluation } from './complete-evaluation';
export { createCompleteEvaluationStream } from './complete-evaluation-stream';
export { createFailEvaluation } from './fail-evaluation';
export { createCancelEvaluation } from './cancel-evaluation';
export { createRecordMetrics } from './record-metrics';
export type { CommandHandlerDeps } from './deps';
