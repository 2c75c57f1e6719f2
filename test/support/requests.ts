import type { SubmitEvaluationRequest } from '../../shared/generated/crucible/storage/v1/command_service';

/** A valid SubmitEvaluation (a fresh id, no request id), with `overrides`. */
export function aSubmission(overrides: Partial<SubmitEvaluationRequest> = {}): SubmitEvaluationRequest {
  return {
    evalId: '',
    code: 'print(1)',
    language: 'python',
    engine: 'docker',
    timeoutSeconds: 60,
    requestId: '',
    ...overrides,
  };
}
