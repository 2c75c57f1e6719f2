import type { CallContext } from '../../../shared/grpc';
import type { OutputUrlConfig } from '../../../shared/config';
import { FailedPreconditionError, NotFoundError } from '../../../shared/errors';
import type {
  GetOutputUrlRequest,
  GetOutputUrlResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import type { Duration } from '../../../shared/generated/google/protobuf/duration';
import { RequestChecks } from '../domain/requests';
import type { BodyStore } from './read-output';

/** Presigns reads of objects in the output store: s3/output-urls.ts. */
export interface OutputUrls {
  sign(key: string, expiresInSeconds: number): Promise<string>;
}

/** expires_in in whole seconds (a fraction rounds up): 1 to the configured maximum; unset: the default. */
function expiryOf(checks: RequestChecks, value: Duration | undefined, config: OutputUrlConfig): number {
  if (value === undefined) return config.defaultExpirySeconds;
  const seconds = Number(value.seconds) + (value.nanos > 0 ? 1 : 0);
  if (!Number.isSafeInteger(seconds) || seconds < 1 || seconds > config.maxExpirySeconds) {
    checks.fail(
      'expires_in',
      'OUT_OF_RANGE',
      `expires_in must be from 1 s to ${config.maxExpirySeconds} s (OUTPUT_URL_MAX_EXPIRY_SECONDS), not ${value.seconds} s`,
    );
  }
  return seconds;
}

/**
 * GetOutputUrl: a presigned GET of a body kept in the object store, valid for the asked (or
 * default) time, so that a large body leaves S3 straight for the client (ranges and parallel
 * downloads included) instead of through this service. The body row is read first: an unknown
 * evaluation or body is NOT_FOUND, and a body kept in PostgreSQL has no URL
 * (FAILED_PRECONDITION, BODY_INLINE: ReadOutput reads it).
 */
export function createGetOutputUrl(deps: {
  readonly bodies: BodyStore;
  readonly outputUrls: OutputUrls;
  readonly outputUrlConfig: OutputUrlConfig;
  readonly clock?: () => Date;
}) {
  const now = deps.clock ?? (() => new Date());
  return async function getOutputUrl(
    request: GetOutputUrlRequest,
    context: CallContext,
  ): Promise<GetOutputUrlResponse> {
    const checks = new RequestChecks();
    const evalId = checks.evalId(request.evalId);
    const kind = checks.outputKind(request.kind);
    const expiresIn = expiryOf(checks, request.expiresIn, deps.outputUrlConfig);
    checks.done();

    const body = await deps.bodies.find(context.caller.tenant, evalId, kind);
    if (body === 'unknown-evaluation') throw new NotFoundError(`evaluation ${evalId} not found`);
    if (body === undefined) throw new NotFoundError(`evaluation ${evalId} has no ${kind} stored`);
    if (body.location.kind === 'inline') {
      throw new FailedPreconditionError(
        evalId,
        'BODY_INLINE',
        `the ${kind} of ${evalId} (${body.size} bytes) is kept in PostgreSQL, not the object store: read it with ReadOutput`,
      );
    }
    if (body.location.home !== 's3') {
      throw new FailedPreconditionError(
        evalId,
        'BODY_IN_FALLBACK',
        `the ${kind} of ${evalId} was stored while S3 was unreachable and is not in S3 yet: read it with ReadOutput, or ask again once it has moved`,
      );
    }
    const signedAt = now();
    const url = await deps.outputUrls.sign(body.location.key, expiresIn);
    return { url, expiresAt: new Date(signedAt.getTime() + expiresIn * 1000), size: String(body.size) };
  };
}
