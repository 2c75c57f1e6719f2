import type { CallContext } from '../../../shared/grpc';
import { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  ListView,
  type CountEvaluationsRequest,
  type CountEvaluationsResponse,
  type ListEvaluationsRequest,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import type { ListEvaluationsOut } from '../wire/encoded-messages';
import { filterScope, parseListFilter } from '../domain/list-filter';
import { decodeScopedToken, encodeScopedToken } from '../domain/page-tokens';
import { RequestChecks } from '../domain/requests';
import type { ChangeHub } from '../live/change-hub';
import type { Readiness } from '../live/readiness';
import { isListMember, type EvaluationList } from '../read-models/evaluation-list';
import type { Shutdown } from '../live/shutdown';
import type { Checkpoints } from '../read-models/checkpoints';
import { minCheckpoint } from '../read-models/checkpoints';
import type { ReadGuard } from '../live/read-guard';
import type { OpenCalls } from '../live/open-calls';
import { waitForMinPosition } from '../live/min-position';
import { encodeOnce, type Encoded } from '../wire/encoded';

interface ListDeps {
  readonly list: EvaluationList;
  readonly checkpoints: Checkpoints;
  readonly guard: ReadGuard;
  readonly openCalls: OpenCalls;
  readonly hub: ChangeHub;
  readonly readiness: Readiness;
  readonly shutdown: Shutdown;
  /** INDEXED_METADATA_KEYS: the metadata keys a filter may name. */
  readonly indexedMetadataKeys: readonly string[];
  /** Since when ended evaluations are surely in the read models (HOT_RETENTION, ACTIVE_RETENTION). */
  readonly coversEndedSince?: () => Date;
}

/**
 * ListEvaluations: a page from the list indexes (read-models/evaluation-list.ts) in creation
 * order, newest or oldest first, after an optional `min_position` wait. A filter on statuses and
 * one of language, engine, executor or an indexed metadata key reads exactly the indexes that
 * hold its members; further facets are checked on the records. Page tokens hold the last member
 * served and are refused on another filter. The partitions' checkpoints are read after the
 * page: a Redis that lost data meanwhile gets UNAVAILABLE, not an empty page.
 */
export function createListEvaluations(deps: ListDeps) {
  return async function listEvaluations(
    request: ListEvaluationsRequest,
    context: CallContext,
  ): Promise<ListEvaluationsOut> {
    const checks = new RequestChecks();
    const filter = parseListFilter(
      request.filter,
      {
        legacyStatus: request.status,
        order: request.order,
        indexedMetadataKeys: deps.indexedMetadataKeys,
        tenant: context.caller.tenant,
      },
      checks,
    );
    const pageSize = checks.pageSize(request.pageSize);
    const minPosition = checks.position(request.minPosition, 'min_position');
    const view = request.view ?? ListView.LIST_VIEW_UNSPECIFIED;
    if (
      view !== ListView.LIST_VIEW_UNSPECIFIED &&
      view !== ListView.LIST_VIEW_SUMMARY &&
      view !== ListView.LIST_VIEW_FULL
    ) {
      checks.fail('view', 'UNKNOWN_VALUE', `view has an unknown value ${view}`);
    }
    const scope = filterScope(filter);
    const after =
      request.pageToken === ''
        ? undefined
        : decodeScopedToken(request.pageToken, scope, checks, (c) => c.length === 1 && isListMember(c[0] ?? ''))?.[0];
    checks.done();

    await deps.readiness.ready(context);
    if (minPosition !== undefined) await waitForMinPosition(deps, minPosition, context, 'ListEvaluations');
    const fresh = deps.guard.beforeRead();
    const page = await deps.list.page(filter, pageSize, after);
    for (const checkpoint of await deps.checkpoints.readAll()) fresh(checkpoint, minPosition);
    deps.guard.reportLost(page.missing);
    deps.guard.reportDamagedIndexes(page.damaged);
    return {
      evaluations: view === ListView.LIST_VIEW_SUMMARY ? page.evaluations.map(summaryOf) : page.evaluations,
      nextPageToken: page.next === undefined ? '' : encodeScopedToken(scope, [page.next]),
      ...(deps.coversEndedSince !== undefined ? { coversEndedSince: deps.coversEndedSince() } : {}),
    };
  };
}

/** An evaluation without its previews and metadata (ListView.SUMMARY): the bytes of a list of thousands. */
function summaryOf(evaluation: Encoded<Evaluation>): Encoded<Evaluation> {
  const { outputPreview: _output, errorPreview: _error, metadata: _metadata, ...rest } = evaluation.message;
  return encodeOnce(Evaluation, { ...rest, outputPreview: Buffer.alloc(0), errorPreview: '' });
}

/**
 * CountEvaluations: the sizes of the indexes a list with the same filter reads, within its
 * creation range (ZLEXCOUNT, O(log n) each), summed over statuses and partitions: exact for a
 * filter on at most one facet, an upper bound (and `exact` false) beyond.
 */
export function createCountEvaluations(deps: ListDeps) {
  return async function countEvaluations(
    request: CountEvaluationsRequest,
    context: CallContext,
  ): Promise<CountEvaluationsResponse> {
    const checks = new RequestChecks();
    const filter = parseListFilter(
      request.filter,
      { indexedMetadataKeys: deps.indexedMetadataKeys, tenant: context.caller.tenant },
      checks,
    );
    const minPosition = checks.position(request.minPosition, 'min_position');
    checks.done();

    await deps.readiness.ready(context);
    if (minPosition !== undefined) await waitForMinPosition(deps, minPosition, context, 'CountEvaluations');
    const fresh = deps.guard.beforeRead();
    const counted = await deps.list.count(filter);
    for (const checkpoint of counted.checkpoints) fresh(checkpoint, minPosition);
    deps.guard.reportDamagedIndexes(counted.damaged);
    return {
      count: String(counted.count),
      exact: counted.exact,
      position: minCheckpoint(counted.checkpoints).toString(),
      ...(deps.coversEndedSince !== undefined ? { coversEndedSince: deps.coversEndedSince() } : {}),
    };
  };
}
