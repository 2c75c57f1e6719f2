import { clientStream, createCallLog, createGrpcServer, unary, type GrpcServer } from '../../shared/grpc';
import {
  EvaluationCommandServiceService,
  type EvaluationCommandServiceServer,
} from '../../shared/generated/crucible/storage/v1/command_service';
import type { Logger } from '../../shared/logging';
import {
  createCancelEvaluation,
  createCompleteEvaluation,
  createCompleteEvaluationStream,
  createFailEvaluation,
  createRecordMetrics,
  createStartEvaluation,
  createSubmitEvaluation,
  type CommandHandlerDeps,
} from './handlers';

const COMMAND_SERVICE_NAME = 'crucible.storage.v1.EvaluationCommandService';

/** Room for the request's other fields and framing around the largest output or code. */
const MESSAGE_OVERHEAD_BYTES = 64 * 1024;

export function createCommandServer(deps: CommandHandlerDeps & { readonly logger: Logger }): GrpcServer {
  const { logger } = deps;
  const log = createCallLog(logger);
  const implementation: EvaluationCommandServiceServer = {
    submitEvaluation: unary('SubmitEvaluation', createSubmitEvaluation(deps), log),
    startEvaluation: unary('StartEvaluation', createStartEvaluation(deps), log),
    completeEvaluation: unary('CompleteEvaluation', createCompleteEvaluation(deps), log),
    completeEvaluationStream: clientStream(
      'CompleteEvaluationStream',
      createCompleteEvaluationStream(deps),
      log,
      deps.limits.clientStreamIdleMs,
    ),
    failEvaluation: unary('FailEvaluation', createFailEvaluation(deps), log),
    cancelEvaluation: unary('CancelEvaluation', createCancelEvaluation(deps), log),
    recordMetrics: unary('RecordMetrics', createRecordMetrics(deps), log),
  };
  return createGrpcServer({
    services: [{ name: COMMAND_SERVICE_NAME, definition: EvaluationCommandServiceService, implementation }],
    logger,
    maxReceiveMessageBytes: Math.max(deps.limits.maxOutputBytes, deps.limits.maxCodeBytes) + MESSAGE_OVERHEAD_BYTES,
    maxRequestBytesInFlight: deps.limits.maxRequestBytesInFlight,
    initialStatus: 'SERVING',
  });
}
