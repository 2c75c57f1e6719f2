import type { UnaryHandler } from '../../../shared/grpc';
import type {
  RecordMetricsRequest,
  RecordMetricsResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { CommandHandlerDeps } from './deps';
import { validateRecordMetrics } from '../domain';

export function createRecordMetrics({
  executor,
  limits,
}: CommandHandlerDeps): UnaryHandler<RecordMetricsRequest, RecordMetricsResponse> {
  return async (request, context) => executor.execute(validateRecordMetrics(request, limits), context);
}
