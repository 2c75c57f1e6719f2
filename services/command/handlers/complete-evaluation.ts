import { UnavailableError } from '../../../shared/errors';
import type { UnaryHandler } from '../../../shared/grpc';
import type {
  CompleteEvaluationRequest,
  CompleteEvaluationResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { DirectUploads } from '../application/direct-uploads';
import { completionOf } from '../application/streamed-output';
import type { CommandHandlerDeps } from './deps';
import { validateComplete, validateCompleteUploaded } from '../domain';

/**
 * CompleteEvaluation: with the output in the message, or (`upload`) uploaded straight to S3
 * before: the upload is finished and checked first (application/direct-uploads.ts), then the
 * command is decided with it as its output.
 */
export function createCompleteEvaluation({
  executor,
  limits,
  uploads,
}: CommandHandlerDeps & { readonly uploads?: DirectUploads | undefined }): UnaryHandler<
  CompleteEvaluationRequest,
  CompleteEvaluationResponse
> {
  return async (request, context) => {
    if (request.upload === undefined) return executor.execute(validateComplete(request, limits), context);
    const completion = validateCompleteUploaded(request, limits);
    if (uploads === undefined) throw new UnavailableError('this server takes no direct uploads');
    const output = await uploads.finish(completion.evalId, completion.upload, context.caller);
    return executor.execute(completionOf(completion, output), context);
  };
}
