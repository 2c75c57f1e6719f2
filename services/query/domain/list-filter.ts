import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { ListOrder, type EvaluationFilter } from '../../../shared/generated/crucible/storage/v1/query_service';
import {
  listFacets,
  MAX_INDEXED_METADATA_VALUE,
  metadataFacet,
  type FacetValue,
  type ListFilter,
} from '../read-models/evaluation-list';
import type { RequestChecks } from './requests';
import { compareCodeUnits } from '../../../shared/domain';

const MAX_FILTER_TEXT = 128;

/**
 * ListEvaluations' and CountEvaluations' filter, validated: known statuses (`legacyStatus`,
 * ListEvaluations' older single `status`, joins them), values no longer than any stored one,
 * metadata only on the indexed keys (the message names them), a creation range that is not
 * empty.
 */
export function parseListFilter(
  filter: EvaluationFilter | undefined,
  options: {
    readonly legacyStatus?: EvaluationStatus;
    readonly order?: ListOrder;
    readonly indexedMetadataKeys: readonly string[];
    /** The caller's tenant: the only one listed. */
    readonly tenant: string;
  },
  checks: RequestChecks,
): ListFilter {
  const statuses = new Set<EvaluationStatus>();
  if (options.legacyStatus !== undefined) {
    const status = checks.status(options.legacyStatus, 'status');
    if (status !== EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED) statuses.add(status);
  }
  (filter?.statuses ?? []).forEach((value, i) => {
    const field = `filter.statuses[${i}]`;
    const status = checks.status(value, field);
    if (status === EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED && value === status) {
      checks.fail(field, 'UNSPECIFIED', `${field} must name a status (leave statuses empty for any)`);
    } else if (status !== EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED) statuses.add(status);
  });
  const facets: FacetValue[] = [];
  const text = (field: string, value: string, facet: FacetValue['facet']): void => {
    if (value === '') return;
    if (value.length > MAX_FILTER_TEXT) {
      checks.fail(`filter.${field}`, 'TOO_LONG', `filter.${field} must be at most ${MAX_FILTER_TEXT} characters`);
    } else facets.push({ facet, value });
  };
  text('language', filter?.language ?? '', 'language');
  text('engine', filter?.engine ?? '', 'engine');
  text('executor_id', filter?.executorId ?? '', 'executor');
  for (const [key, value] of Object.entries(filter?.metadata ?? {}).sort(([a], [b]) => compareCodeUnits(a, b))) {
    const field = `filter.metadata["${key}"]`;
    if (!options.indexedMetadataKeys.includes(key)) {
      const indexed = options.indexedMetadataKeys;
      checks.fail(
        field,
        'NOT_INDEXED',
        indexed.length === 0
          ? `metadata key "${key}" has no index: no metadata key is indexed (INDEXED_METADATA_KEYS)`
          : `metadata key "${key}" has no index; the indexed keys are ${indexed.join(', ')} (INDEXED_METADATA_KEYS)`,
      );
    } else if (value.length > MAX_INDEXED_METADATA_VALUE) {
      checks.fail(
        field,
        'TOO_LONG',
        `${field} must be at most ${MAX_INDEXED_METADATA_VALUE} characters (longer values are not indexed)`,
      );
    } else facets.push({ facet: 'metadata', value: metadataFacet(key, value) });
  }
  const after = filter?.createdAfter;
  const before = filter?.createdBefore;
  if (after !== undefined && before !== undefined && after.getTime() >= before.getTime()) {
    checks.fail(
      'filter.created_before',
      'OUT_OF_RANGE',
      'filter.created_before must be later than filter.created_after',
    );
  }
  const order = options.order ?? ListOrder.LIST_ORDER_UNSPECIFIED;
  if (
    order !== ListOrder.LIST_ORDER_UNSPECIFIED &&
    order !== ListOrder.LIST_ORDER_NEWEST_FIRST &&
    order !== ListOrder.LIST_ORDER_OLDEST_FIRST
  ) {
    checks.fail('order', 'UNKNOWN_VALUE', `order has an unknown value ${order}`);
  }
  return {
    tenant: options.tenant,
    statuses: [...statuses].sort((a, b) => a - b),
    facets: listFacets(facets),
    ...(after !== undefined ? { createdAfter: after } : {}),
    ...(before !== undefined ? { createdBefore: before } : {}),
    order: order === ListOrder.LIST_ORDER_OLDEST_FIRST ? 'oldest' : 'newest',
  };
}

/** What a page token is valid for: the whole filter, as it reads the indexes. */
export function filterScope(filter: ListFilter): unknown[] {
  return [
    filter.tenant,
    filter.statuses,
    filter.facets.map((f) => [f.facet, f.value]),
    filter.createdAfter?.getTime() ?? null,
    filter.createdBefore?.getTime() ?? null,
    filter.order,
  ];
}
