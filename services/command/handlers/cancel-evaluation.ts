import type { UnaryHandler } from '../../../shared/grpc';
import type {
  CancelEvaluationRequest,
  CancelEvaluationResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { CommandHandlerDeps } from './deps';
import { validateCancel } from '../domain';

export function createCancelEvaluation({
  executor,
  limits,
}: CommandHandlerDeps): UnaryHandler<CancelEvaluationRequest, CancelEvaluationResponse> {
  return async (request, context) => executor.execute(validateCancel(request, limits), context);
}
