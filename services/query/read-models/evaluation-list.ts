import { EvaluationStatus, type Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { Encoded } from '../wire/encoded';
import { INDEXED_STATUSES, type Facet, type KeyLayout } from './keys';
import type { WriteSink } from './write-ops';
import { compareCodeUnits, tenantOrDefault } from '../../../shared/domain';

/**
 * Read model: evaluations newest first by creation time, overall and per status.
 *
 * Each index is a sorted set with score 0 and member `<created-at ms, zero-padded>:<eval_id>`,
 * so lexicographic order is (created_at, eval_id) and `ZRANGE key (<member> - BYLEX REV LIMIT
 * 0 n` gives exact, stable newest-first pages: a page token is the last member served, and an
 * evaluation created during paging never shifts or repeats a page.
 *
 * Within each status, facet indexes list the evaluations of one language, engine or executor
 * (`index:<status>:<facet>:<value>`): a filtered list is a page of one of them, and their sizes
 * are the queue's counts (redis/queue-metrics.ts), kept by the same atomic writes and audited by
 * the same counts (redis/index-counts.ts) as every index.
 *
 * How an event changes it: EvaluationQueued adds the member to `all`, its status index and that
 * status' facets; a status change (or the executor a start names) moves the member from the
 * indexes of the old state to those of the new one.
 */
export const CREATED_DIGITS = 15;
const MEMBER_PATTERN = /^\d{15}:.+$/s;

export function listMember(evaluation: Pick<Evaluation, 'createdAt' | 'evalId'>): string {
  const ms = Math.max(0, evaluation.createdAt?.getTime() ?? 0);
  return `${String(ms).padStart(CREATED_DIGITS, '0')}:${evaluation.evalId}`;
}

/**
 * What a partition's facet indexes hold every evaluation of: this version's facets and the
 * indexed metadata keys. The projection writes it with the first step on an empty partition (a
 * rebuild's too), so that facet indexes left incomplete — read models built by a version
 * without them, or before INDEXED_METADATA_KEYS named a key — are never read as whole: until the
 * index repair has filled them in from the records and written the marker, lists and counts that
 * need them answer UNAVAILABLE (redis/index-counts.ts).
 */
export function facetMarker(layout: Pick<KeyLayout, 'indexedMetadataKeys'>): string {
  // v2: every index is one tenant's (keys.ts); v1's indexes mixed them.
  return JSON.stringify({ v: 2, metadata: [...layout.indexedMetadataKeys].sort() });
}

/** What decides an evaluation's indexes. */
type Listed = Pick<Evaluation, 'status' | 'language' | 'engine' | 'executorId' | 'metadata' | 'tenantId'>;

/** Longest metadata value (as text) with a facet index: a key name is no place for a document. */
export const MAX_INDEXED_METADATA_VALUE = 256;

/**
 * The text a metadata value is indexed and filtered by: a string itself, a number or boolean
 * as JSON writes it; undefined for anything else (objects, lists, null, long strings).
 */
export function metadataFacetValue(value: unknown): string | undefined {
  const text =
    typeof value === 'string'
      ? value
      : typeof value === 'number' || typeof value === 'boolean'
        ? JSON.stringify(value)
        : undefined;
  return text !== undefined && text.length <= MAX_INDEXED_METADATA_VALUE ? text : undefined;
}

/** A metadata facet's value: the key and the value's text. */
export function metadataFacet(key: string, text: string): string {
  return `${key}=${text}`;
}

/** The facet indexes of `status` an evaluation like `state` is in (no executor facet before it has one). */
function facetKeys(layout: KeyLayout, partition: number, status: EvaluationStatus, state: Listed): string[] {
  const keys: string[] = [];
  const tenant = tenantOrDefault(state.tenantId);
  const facet = (f: Facet, value: string): string => layout.indexFacet(partition, tenant, status, f, value);
  if (state.language !== '') keys.push(facet('language', state.language));
  if (state.engine !== '') keys.push(facet('engine', state.engine));
  if (state.executorId !== '') keys.push(facet('executor', state.executorId));
  for (const key of layout.indexedMetadataKeys) {
    const text = metadataFacetValue(state.metadata?.[key]);
    if (text !== undefined) keys.push(facet('metadata', metadataFacet(key, text)));
  }
  return keys;
}

/** Every index an evaluation in `state` is listed in: `all`, its status and that status' facets. */
export function indexKeysOfEvaluation(layout: KeyLayout, partition: number, state: Listed): string[] {
  const tenant = tenantOrDefault(state.tenantId);
  return [
    layout.indexAll(partition, tenant),
    layout.indexStatus(partition, tenant, state.status),
    ...facetKeys(layout, partition, state.status, state),
  ];
}

/**
 * Every index an evaluation like `state` could be in, whatever its status: where a repair or the
 * checker looks for it. Its language and engine never change and its executor is set once, so
 * these cover every state it was ever in (given a state with the executor, if it has one).
 */
export function possibleIndexKeys(layout: KeyLayout, partition: number, state: Listed): string[] {
  const tenant = tenantOrDefault(state.tenantId);
  return [
    layout.indexAll(partition, tenant),
    ...INDEXED_STATUSES.flatMap((status) => [
      layout.indexStatus(partition, tenant, status),
      ...facetKeys(layout, partition, status, state),
    ]),
  ];
}

export function indexWrites(
  layout: KeyLayout,
  partition: number,
  before: Evaluation | undefined,
  after: Evaluation,
  out: WriteSink,
): void {
  if (before !== undefined && before.status === after.status && before.executorId === after.executorId) return;
  const member = listMember(after);
  const wanted = indexKeysOfEvaluation(layout, partition, after);
  const had = before === undefined ? [] : indexKeysOfEvaluation(layout, partition, before);
  for (const key of had) if (!wanted.includes(key)) out.zrem(key, member);
  for (const key of wanted) if (!had.includes(key)) out.zadd(key, member);
}

/**
 * Puts the evaluation into the indexes `state` belongs in and takes it out of every other one it
 * could be in: for an evaluation whose memberships are unknown (its record was lost, or was not
 * the state its move starts from), where `indexWrites` would only undo what `before` implies.
 */
export function indexReset(layout: KeyLayout, partition: number, state: Evaluation, out: WriteSink): void {
  const member = listMember(state);
  const wanted = indexKeysOfEvaluation(layout, partition, state);
  for (const key of wanted) out.zadd(key, member);
  for (const key of possibleIndexKeys(layout, partition, state)) if (!wanted.includes(key)) out.zrem(key, member);
}

/** What a list or count selects (ListEvaluations' filter, validated). */
export interface ListFilter {
  /** The caller's: only its indexes are read. */
  readonly tenant: string;
  /** Any of these; empty: any status. */
  readonly statuses: readonly EvaluationStatus[];
  /**
   * Facet values that must all hold; the first is served by its index, the others are checked
   * on each record (listFacets orders them).
   */
  readonly facets: readonly FacetValue[];
  /** Inclusive. */
  readonly createdAfter?: Date;
  /** Exclusive. */
  readonly createdBefore?: Date;
  readonly order: 'newest' | 'oldest';
}

export interface FacetValue {
  readonly facet: Facet;
  /** For metadata, `key=value` (metadataFacet). */
  readonly value: string;
}

/** Which facet an index serves first: the one likely to select fewest (an executor runs few). */
const SELECTIVITY: readonly Facet[] = ['executor', 'metadata', 'language', 'engine'];

/** `facets` in the order a list uses them: the most selective first (it is the one read from an index). */
export function listFacets(facets: readonly FacetValue[]): FacetValue[] {
  return [...facets].sort((a, b) => SELECTIVITY.indexOf(a.facet) - SELECTIVITY.indexOf(b.facet));
}

/** The indexes of a partition whose members a filter lists: per status (or every status, or `all`) its index or lead facet's. */
export function indexKeysOfFilter(layout: KeyLayout, partition: number, filter: ListFilter): string[] {
  const lead = filter.facets[0];
  const statuses = filter.statuses.length > 0 ? filter.statuses : lead !== undefined ? INDEXED_STATUSES : [];
  const { tenant } = filter;
  if (statuses.length === 0) return [layout.indexAll(partition, tenant)];
  return statuses.map((status) =>
    lead === undefined
      ? layout.indexStatus(partition, tenant, status)
      : layout.indexFacet(partition, tenant, status, lead.facet, lead.value),
  );
}

/** The member a creation time starts (every member created at `at` sorts after it). */
function createdBound(at: Date): string {
  return String(Math.max(0, at.getTime())).padStart(CREATED_DIGITS, '0');
}

/**
 * The lexicographic range (ZRANGE BYLEX bounds, low and high) of the members a filter selects
 * after `after` (the last member served, exclusive) in its order.
 */
export function memberRange(filter: ListFilter, after: string | undefined): { low: string; high: string } {
  let low = filter.createdAfter === undefined ? '-' : `[${createdBound(filter.createdAfter)}`;
  let high = filter.createdBefore === undefined ? '+' : `(${createdBound(filter.createdBefore)}`;
  if (after !== undefined) {
    if (filter.order === 'newest') high = `(${after}`;
    else low = `(${after}`;
  }
  return { low, high };
}

/** Whether an evaluation read for a page still matches the filter (its status may have moved since the index was read). */
export function matchesFilter(evaluation: Evaluation, filter: ListFilter): boolean {
  if (filter.statuses.length > 0 && !filter.statuses.includes(evaluation.status)) return false;
  return filter.facets.every(({ facet, value }) => {
    switch (facet) {
      case 'language':
        return evaluation.language === value;
      case 'engine':
        return evaluation.engine === value;
      case 'executor':
        return evaluation.executorId === value;
      case 'metadata': {
        const at = value.indexOf('=');
        const text = metadataFacetValue(evaluation.metadata?.[value.slice(0, at)]);
        return text === value.slice(at + 1);
      }
    }
  });
}

/**
 * Merges the pages of several indexes (each fetched with limit pageSize+1) into one page of at
 * most pageSize members in the filter's order. `hasMore` is exact: some index holds a member
 * after the last one returned.
 */
export function mergePages(
  pages: readonly (readonly string[])[],
  pageSize: number,
  order: ListFilter['order'] = 'newest',
): { members: string[]; hasMore: boolean } {
  // Members are ASCII-comparable strings: lexicographic order is creation order. Several
  // statuses' indexes never share a member, so no duplicates arise.
  const all = pages.flat();
  all.sort(compareCodeUnits);
  if (order === 'newest') all.reverse();
  return { members: all.slice(0, pageSize), hasMore: all.length > pageSize };
}

/** A page token's member: a creation time and an id. */
export function isListMember(text: string): boolean {
  return MEMBER_PATTERN.test(text);
}

export interface EvaluationPage {
  readonly evaluations: Encoded<Evaluation>[];
  /** The member the next page starts after; undefined on the last page. */
  readonly next: string | undefined;
  /**
   * Ids the index listed without a record: index and record are written in one atomic step,
   * so these records were lost (deleted, evicted), and the page is not the truth.
   */
  readonly missing: string[];
  /** Partitions one of whose indexes differed from its count: members were lost (redis/index-counts.ts). */
  readonly damaged: number[];
}

export interface EvaluationCount {
  readonly count: number;
  /** False when facets beyond the first were not counted (an upper bound). */
  readonly exact: boolean;
  readonly checkpoints: readonly bigint[];
  readonly damaged: number[];
}

export interface EvaluationList {
  /** One page in the filter's order, after the member `after` (exclusive). */
  page(filter: ListFilter, pageSize: number, after: string | undefined): Promise<EvaluationPage>;
  /** How many evaluations the filter selects, from the indexes' sizes. */
  count(filter: ListFilter): Promise<EvaluationCount>;
}
