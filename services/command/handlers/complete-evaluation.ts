import type { UnaryHandler } from '../../../shared/grpc';
import type {
  CompleteEvaluationRequest,
  CompleteEvaluationResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { CommandHandlerDeps } from './deps';
import { validateComplete } from '../domain';

export function createCompleteEvaluation({
  executor,
  limits,
}: CommandHandlerDeps): UnaryHandler<CompleteEvaluationRequest, CompleteEvaluationResponse> {
  return async (request, context) => executor.execute(validateComplete(request, limits), context);
}
