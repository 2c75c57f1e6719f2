import type { UnaryHandler } from '../../../shared/grpc';
import type {
  SubmitEvaluationRequest,
  SubmitEvaluationResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { CommandHandlerDeps } from './deps';
import { validateSubmit } from '../domain';

export function createSubmitEvaluation({
  executor,
  limits,
}: CommandHandlerDeps): UnaryHandler<SubmitEvaluationRequest, SubmitEvaluationResponse> {
  return async (request, context) => executor.execute(validateSubmit(request, limits), context);
}
