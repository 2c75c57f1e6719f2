import {
  clientStream,
  createCalls,
  createGrpcServer,
  unary,
  type GrpcServer,
  type ServerAccess,
  type RpcMetrics,
} from '../../shared/grpc';
import {
  EvaluationCommandServiceService,
  type EvaluationCommandServiceServer,
} from '../../shared/generated/crucible/storage/v1/command_service';
import { UnavailableError } from '../../shared/errors';
import type { DirectUploads } from './application/direct-uploads';
import type { Tracing } from '../../shared/tracing';
import type { Logger } from '../../shared/logging';
import {
  createAppendLogs,
  createCancelEvaluation,
  createCompleteEvaluation,
  createCompleteEvaluationStream,
  createCreateOutputUpload,
  createFailEvaluation,
  createRecordMetrics,
  createRecordSecurityEvent,
  createReportExecutorHealth,
  createStartEvaluation,
  createSubmitEvaluation,
  type CommandHandlerDeps,
  type ReportExecutorHealthDeps,
} from './handlers';

const COMMAND_SERVICE_NAME = 'crucible.storage.v1.EvaluationCommandService';

/** Room for the request's other fields and framing around the largest output or code. */
const MESSAGE_OVERHEAD_BYTES = 64 * 1024;

export interface CommandServerDeps extends CommandHandlerDeps {
  readonly logger: Logger;
  /** Transport, gate and reflection (shared/grpc/access.ts). */
  readonly access: ServerAccess;
  /**
   * Where ReportExecutorHealth keeps reports (main.ts always passes it). Left out by tests
   * that serve only the commands: the RPC then answers UNAVAILABLE.
   */
  readonly executorHealth?: ReportExecutorHealthDeps;
  /** Direct uploads (main.ts always passes them); without, CreateOutputUpload is UNAVAILABLE. */
  readonly uploads?: DirectUploads;
  /** Where every call is counted (shared/grpc/rpc-metrics.ts); left out: nowhere. */
  readonly rpcMetrics?: RpcMetrics;
  /** A span per call (shared/tracing); left out: none. */
  readonly tracing?: Tracing;
}

export function createCommandServer(deps: CommandServerDeps): GrpcServer {
  const { logger } = deps;
  const calls = createCalls(logger, deps.access.gate, deps.rpcMetrics, deps.tracing);
  const reportExecutorHealth =
    deps.executorHealth === undefined
      ? () => Promise.reject(new UnavailableError('this server keeps no executor health'))
      : createReportExecutorHealth(deps.executorHealth);
  const implementation: EvaluationCommandServiceServer = {
    submitEvaluation: unary('SubmitEvaluation', createSubmitEvaluation(deps), calls),
    startEvaluation: unary('StartEvaluation', createStartEvaluation(deps), calls),
    completeEvaluation: unary('CompleteEvaluation', createCompleteEvaluation(deps), calls),
    createOutputUpload: unary(
      'CreateOutputUpload',
      deps.uploads === undefined
        ? () => Promise.reject(new UnavailableError('this server takes no direct uploads'))
        : createCreateOutputUpload({ uploads: deps.uploads, limits: deps.limits }),
      calls,
    ),
    completeEvaluationStream: clientStream(
      'CompleteEvaluationStream',
      createCompleteEvaluationStream(deps),
      calls,
      deps.limits.clientStreamIdleMs,
    ),
    failEvaluation: unary('FailEvaluation', createFailEvaluation(deps), calls),
    cancelEvaluation: unary('CancelEvaluation', createCancelEvaluation(deps), calls),
    recordMetrics: unary('RecordMetrics', createRecordMetrics(deps), calls),
    recordSecurityEvent: unary('RecordSecurityEvent', createRecordSecurityEvent(deps), calls),
    reportExecutorHealth: unary('ReportExecutorHealth', reportExecutorHealth, calls),
    appendLogs: clientStream('AppendLogs', createAppendLogs(deps), calls, deps.limits.clientStreamIdleMs),
  };
  return createGrpcServer({
    services: [{ name: COMMAND_SERVICE_NAME, definition: EvaluationCommandServiceService, implementation }],
    logger,
    maxReceiveMessageBytes: Math.max(deps.limits.maxOutputBytes, deps.limits.maxCodeBytes) + MESSAGE_OVERHEAD_BYTES,
    maxRequestBytesInFlight: deps.limits.maxRequestBytesInFlight,
    requestReadTimeoutMs: deps.limits.requestReadTimeoutMs,
    connectionIdleMs: deps.limits.connectionIdleMs,
    initialStatus: 'SERVING',
    access: deps.access,
    calls,
  });
}
