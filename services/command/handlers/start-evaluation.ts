import type { UnaryHandler } from '../../../shared/grpc';
import type {
  StartEvaluationRequest,
  StartEvaluationResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { CommandHandlerDeps } from './deps';
import { validateStart } from '../domain';

export function createStartEvaluation({
  executor,
  limits,
}: CommandHandlerDeps): UnaryHandler<StartEvaluationRequest, StartEvaluationResponse> {
  return async (request, context) => executor.execute(validateStart(request, limits), context);
}
