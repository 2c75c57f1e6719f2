import type { CallContext } from '../../../shared/grpc';
import { NotFoundError } from '../../../shared/errors';
import type {
  EventLogEntry,
  GetEvaluationEventsRequest,
  GetEvaluationEventsResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { encodeEventPageToken, EVENT_PAGE_SIZES, RequestChecks } from '../domain/requests';

/** One page of an evaluation's events, and whether the log holds more after it. */
export interface EventPage {
  readonly events: readonly EventLogEntry[];
  readonly more: boolean;
}

/** An evaluation's audit trail, as the event log in PostgreSQL holds it. */
export interface EvaluationEvents {
  /**
   * Its events with a revision above `afterRevision`, in revision order, at most `pageSize` of
   * them (fewer when their data is large); undefined when none of `tenant`'s evaluations has the id.
   */
  page(tenant: string, evalId: string, afterRevision: bigint, pageSize: number): Promise<EventPage | undefined>;
}

/**
 * GetEvaluationEvents: an evaluation's audit trail, a page at a time, read from the event log
 * itself (PostgreSQL), not the read models: it holds every event whose command was answered,
 * whatever Redis holds, so there is no readiness to wait for (as for ReadOutput). Pages are
 * keyset pages on the revision: an event appended while a client pages lands after its cursor
 * and never shifts a page.
 */
export function createGetEvaluationEvents(deps: { readonly evaluationEvents: EvaluationEvents }) {
  return async function getEvaluationEvents(
    request: GetEvaluationEventsRequest,
    context: CallContext,
  ): Promise<GetEvaluationEventsResponse> {
    const checks = new RequestChecks();
    const evalId = checks.evalId(request.evalId);
    const afterRevision = checks.position(request.afterRevision, 'after_revision');
    const pageSize = checks.pageSize(request.pageSize, EVENT_PAGE_SIZES);
    const lastRevision = checks.eventPageToken(request.pageToken, evalId, afterRevision);
    checks.done();

    const from = lastRevision ?? afterRevision ?? 0n;
    const page = await deps.evaluationEvents.page(context.caller.tenant, evalId, from, pageSize);
    if (page === undefined) throw new NotFoundError(`evaluation ${evalId} not found`);
    const last = page.events.at(-1);
    const nextPageToken =
      page.more && last !== undefined
        ? encodeEventPageToken({ evalId, afterRevision: afterRevision ?? 0n, lastRevision: BigInt(last.revision) })
        : '';
    return { events: [...page.events], nextPageToken };
  };
}
