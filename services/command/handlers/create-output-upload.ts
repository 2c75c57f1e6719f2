import type { Limits } from '../../../shared/config';
import type {
  CreateOutputUploadRequest,
  CreateOutputUploadResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { UnaryHandler } from '../../../shared/grpc';
import type { DirectUploads } from '../application/direct-uploads';
import { validateCreateUpload } from '../domain';

export function createCreateOutputUpload(deps: {
  readonly uploads: DirectUploads;
  readonly limits: Limits;
}): UnaryHandler<CreateOutputUploadRequest, CreateOutputUploadResponse> {
  return async (request, context) => {
    const created = await deps.uploads.create(validateCreateUpload(request, deps.limits), context.caller);
    return {
      uploadId: created.uploadId,
      partSize: String(created.partSize),
      expiresAt: created.expiresAt,
      parts: created.parts.map((p) => ({
        partNumber: p.partNumber,
        url: p.url,
        offset: String(p.offset),
        size: String(p.size),
      })),
    };
  };
}
