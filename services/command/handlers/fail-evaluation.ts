import type { UnaryHandler } from '../../../shared/grpc';
import type {
  FailEvaluationRequest,
  FailEvaluationResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { CommandHandlerDeps } from './deps';
import { validateFail } from '../domain';

export function createFailEvaluation({
  executor,
  limits,
}: CommandHandlerDeps): UnaryHandler<FailEvaluationRequest, FailEvaluationResponse> {
  return async (request, context) => executor.execute(validateFail(request, limits), context);
}
