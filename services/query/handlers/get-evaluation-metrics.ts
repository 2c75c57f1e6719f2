import { NotFoundError } from '../../../shared/errors';
import type { CallContext } from '../../../shared/grpc';
import type {
  GetEvaluationMetricsRequest,
  GetEvaluationMetricsResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { decodeScopedToken, encodeScopedToken } from '../domain/page-tokens';
import { RequestChecks, type PageSizes } from '../domain/requests';

/** A stored point, as a page lists it. */
export interface StoredMetricPoint {
  /** Its row id: the last tie-breaker of the series order. */
  readonly id: string;
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly step?: string;
  readonly measuredAt: Date;
  readonly revision: string;
}

export type MetricSeriesPage = StoredMetricPoint[];

/** Where a page ends, in series order: name, step (-1 for none), time, id. */
export interface SeriesCursor {
  readonly name: string;
  readonly stepKey: string;
  /** ISO-8601 */
  readonly measuredAt: string;
  readonly id: string;
}

export interface SeriesFilter {
  readonly names: readonly string[];
  readonly afterStep?: string;
}

/** The stored points of evaluations (PostgreSQL). */
export interface MetricSeries {
  /**
   * Up to `limit` points after `after`, in series order; 'unknown-evaluation' when `tenant` has
   * no such evaluation.
   */
  page(
    tenant: string,
    evalId: string,
    filter: SeriesFilter,
    after: SeriesCursor | undefined,
    limit: number,
  ): Promise<MetricSeriesPage | 'unknown-evaluation'>;
}

const SERIES_PAGE_SIZES: PageSizes = { byDefault: 1000, max: 10_000 };
const MAX_NAMES = 100;
const MAX_NAME_LENGTH = 128;

/**
 * GetEvaluationMetrics: a page of an evaluation's points from PostgreSQL, where RecordMetrics
 * wrote them before it answered (no read model: a series is read rarely and whole, and the
 * read model keeps the per-name summaries). Keyset pages: a point recorded meanwhile appears
 * on a later page if it sorts after the cursor, and no point is listed twice.
 */
export function createGetEvaluationMetrics(deps: { readonly metrics: MetricSeries }) {
  return async function getEvaluationMetrics(
    request: GetEvaluationMetricsRequest,
    context: CallContext,
  ): Promise<GetEvaluationMetricsResponse> {
    const checks = new RequestChecks();
    const evalId = checks.evalId(request.evalId);
    const filter = seriesFilter(request, checks);
    const pageSize = checks.pageSize(request.pageSize, SERIES_PAGE_SIZES);
    const scope = [evalId, filter.names, filter.afterStep ?? null];
    const after = request.pageToken === '' ? undefined : decodeSeriesToken(request.pageToken, scope, checks);
    checks.done();

    const page = await deps.metrics.page(context.caller.tenant, evalId, filter, after, pageSize + 1);
    if (page === 'unknown-evaluation') throw new NotFoundError(`evaluation ${evalId} not found`);
    const more = page.length > pageSize;
    const points = more ? page.slice(0, pageSize) : page;
    const last = points[points.length - 1];
    return {
      metrics: points.map((point) => ({
        name: point.name,
        value: point.value,
        unit: point.unit,
        ...(point.step !== undefined ? { step: point.step } : {}),
        timestamp: point.measuredAt,
        revision: point.revision,
      })),
      nextPageToken: more && last !== undefined ? encodeSeriesToken(cursorOf(last), scope) : '',
    };
  };
}

function seriesFilter(request: GetEvaluationMetricsRequest, checks: RequestChecks): SeriesFilter {
  if (request.names.length > MAX_NAMES) {
    checks.fail('names', 'TOO_MANY', `names may hold at most ${MAX_NAMES} metric names, got ${request.names.length}`);
  }
  request.names.forEach((name, i) => {
    if (name === '' || name.length > MAX_NAME_LENGTH) {
      checks.fail(`names[${i}]`, 'LENGTH', `names[${i}] must be 1-${MAX_NAME_LENGTH} characters`);
    } else checks.noNul(name, `names[${i}]`);
  });
  const afterStep = checks.position(request.afterStep, 'after_step');
  return {
    names: [...new Set(request.names)].sort(),
    ...(afterStep !== undefined ? { afterStep: afterStep.toString() } : {}),
  };
}

function cursorOf(point: StoredMetricPoint): SeriesCursor {
  return { name: point.name, stepKey: point.step ?? '-1', measuredAt: point.measuredAt.toISOString(), id: point.id };
}

function encodeSeriesToken(cursor: SeriesCursor, scope: readonly unknown[]): string {
  return encodeScopedToken(scope, [cursor.name, cursor.stepKey, cursor.measuredAt, cursor.id]);
}

function decodeSeriesToken(token: string, scope: readonly unknown[], checks: RequestChecks): SeriesCursor | undefined {
  const cursor = decodeScopedToken(
    token,
    scope,
    checks,
    ([name, stepKey, measuredAt, id, ...rest]) =>
      rest.length === 0 &&
      name !== undefined &&
      /^-?\d{1,19}$/.test(stepKey ?? '') &&
      Number.isFinite(Date.parse(measuredAt ?? '')) &&
      /^\d{1,19}$/.test(id ?? ''),
  );
  if (cursor === undefined) return undefined;
  const [name = '', stepKey = '', measuredAt = '', id = ''] = cursor;
  return { name, stepKey, measuredAt, id };
}
