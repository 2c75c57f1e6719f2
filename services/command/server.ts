import { clientStream, createGrpcServer, unary, type GrpcServer } from '../../shared/grpc';
import {
  EvaluationCommandServiceService,
  type EvaluationCommandServiceServer,
} from '../../shared/generated/crucible/storage/v1/command_service';
import type { Logger } from '../../shared/logging';
import {
  cancelEvaluation,
  completeEvaluation,
  completeEvaluationStream,
  failEvaluation,
  startEvaluation,
  submitEvaluation,
  type CommandHandlerDeps,
} from './handlers';

export const COMMAND_SERVICE_NAME = 'crucible.storage.v1.EvaluationCommandService';

/** Room for the request's other fields and framing around the largest output or code. */
const MESSAGE_OVERHEAD_BYTES = 64 * 1024;

export function createCommandServer(deps: CommandHandlerDeps & { readonly logger: Logger }): GrpcServer {
  const { logger } = deps;
  const implementation: EvaluationCommandServiceServer = {
    submitEvaluation: unary('SubmitEvaluation', submitEvaluation(deps), logger),
    startEvaluation: unary('StartEvaluation', startEvaluation(deps), logger),
    completeEvaluation: unary('CompleteEvaluation', completeEvaluation(deps), logger),
    completeEvaluationStream: clientStream('CompleteEvaluationStream', completeEvaluationStream(deps), logger),
    failEvaluation: unary('FailEvaluation', failEvaluation(deps), logger),
    cancelEvaluation: unary('CancelEvaluation', cancelEvaluation(deps), logger),
  };
  return createGrpcServer({
    services: [{ name: COMMAND_SERVICE_NAME, definition: EvaluationCommandServiceService, implementation }],
    logger,
    maxReceiveMessageBytes: Math.max(deps.limits.maxOutputBytes, deps.limits.maxCodeBytes) + MESSAGE_OVERHEAD_BYTES,
    initialStatus: 'SERVING',
  });
}
