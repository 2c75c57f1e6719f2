import { ValidationError } from '../../../shared/errors';
import type { CallContext } from '../../../shared/grpc';
import type { ListEvaluationsRequest } from '../../../shared/generated/crucible/storage/v1/query_service';
import type { ListEvaluationsOut } from '../wire/encoded-messages';
import { RequestChecks } from '../domain/requests';
import type { ChangeHub } from '../live/change-hub';
import type { Readiness } from '../live/readiness';
import { decodePageToken, type EvaluationList, type PageCursor } from '../read-models/evaluation-list';
import type { Shutdown } from '../live/shutdown';
import type { Checkpoints } from '../read-models/checkpoints';
import type { ReadGuard } from '../live/read-guard';
import type { OpenCalls } from '../live/open-calls';
import { waitForMinPosition } from '../live/min-position';

/**
 * ListEvaluations: a newest-first page from the list indexes, optionally of one status,
 * after an optional `min_position` wait. Page tokens are validated (INVALID_ARGUMENT on a
 * token that is not ours or was issued for another status). The partitions' checkpoints are
 * read after the page: a Redis that lost data meanwhile gets UNAVAILABLE, not an empty page.
 */
export function createListEvaluations(deps: {
  readonly list: EvaluationList;
  readonly checkpoints: Checkpoints;
  readonly guard: ReadGuard;
  readonly openCalls: OpenCalls;
  readonly hub: ChangeHub;
  readonly readiness: Readiness;
  readonly shutdown: Shutdown;
}) {
  return async function listEvaluations(
    request: ListEvaluationsRequest,
    context: CallContext,
  ): Promise<ListEvaluationsOut> {
    const checks = new RequestChecks();
    const status = checks.status(request.status, 'status');
    const pageSize = checks.pageSize(request.pageSize);
    const minPosition = checks.position(request.minPosition, 'min_position');
    let cursor: PageCursor | undefined;
    if (request.pageToken !== '') {
      try {
        cursor = decodePageToken(request.pageToken, status);
      } catch (err) {
        if (!(err instanceof ValidationError)) throw err;
        for (const v of err.violations) checks.fail(v.field, v.rule, v.description);
      }
    }
    checks.done();

    await deps.readiness.ready(context);
    if (minPosition !== undefined) await waitForMinPosition(deps, minPosition, context, 'ListEvaluations');
    const fresh = deps.guard.beforeRead();
    const page = await deps.list.page(status, pageSize, cursor);
    for (const checkpoint of await deps.checkpoints.readAll()) fresh(checkpoint, minPosition);
    deps.guard.reportLost(page.missing);
    deps.guard.reportDamagedIndexes(page.damaged);
    return { evaluations: page.evaluations, nextPageToken: page.nextPageToken };
  };
}
