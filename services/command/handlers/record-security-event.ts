import type { UnaryHandler } from '../../../shared/grpc';
import type {
  RecordSecurityEventRequest,
  RecordSecurityEventResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { CommandHandlerDeps } from './deps';
import { validateRecordSecurityEvent } from '../domain';

export function createRecordSecurityEvent({
  executor,
  limits,
}: CommandHandlerDeps): UnaryHandler<RecordSecurityEventRequest, RecordSecurityEventResponse> {
  return async (request, context) => executor.execute(validateRecordSecurityEvent(request, limits), context);
}
