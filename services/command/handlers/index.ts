export { submitEvaluation } from './submit-evaluation';
export { startEvaluation } from './start-evaluation';
export { completeEvaluation } from './complete-evaluation';
export { completeEvaluationStream } from './complete-evaluation-stream';
export { failEvaluation } from './fail-evaluation';
export { cancelEvaluation } from './cancel-evaluation';
export type { CommandHandlerDeps } from './deps';
