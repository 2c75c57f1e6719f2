import { ValidationError } from '../../../shared/errors';
import { EvaluationStatus, type Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { Encoded } from '../wire/encoded';
import { INDEXED_STATUSES, type KeyLayout } from './keys';
import type { WriteSink } from './write-ops';

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

/** What decides an evaluation's indexes. */
type Listed = Pick<Evaluation, 'status' | 'language' | 'engine' | 'executorId'>;

/** The facet indexes of `status` an evaluation like `state` is in (no executor facet before it has one). */
function facetKeys(layout: KeyLayout, partition: number, status: EvaluationStatus, state: Listed): string[] {
  const keys: string[] = [];
  if (state.language !== '') keys.push(layout.indexFacet(partition, status, 'language', state.language));
  if (state.engine !== '') keys.push(layout.indexFacet(partition, status, 'engine', state.engine));
  if (state.executorId !== '') keys.push(layout.indexFacet(partition, status, 'executor', state.executorId));
  return keys;
}

/** Every index an evaluation in `state` is listed in: `all`, its status and that status' facets. */
export function indexKeysOfEvaluation(layout: KeyLayout, partition: number, state: Listed): string[] {
  return [
    layout.indexAll(partition),
    layout.indexStatus(partition, state.status),
    ...facetKeys(layout, partition, state.status, state),
  ];
}

/**
 * Every index an evaluation like `state` could be in, whatever its status: where a repair or the
 * checker looks for it. Its language and engine never change and its executor is set once, so
 * these cover every state it was ever in (given a state with the executor, if it has one).
 */
export function possibleIndexKeys(layout: KeyLayout, partition: number, state: Listed): string[] {
  return [
    layout.indexAll(partition),
    ...INDEXED_STATUSES.flatMap((status) => [
      layout.indexStatus(partition, status),
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

/** What a page token carries: the status it was issued for and the last member served. */
export interface PageCursor {
  readonly status: EvaluationStatus;
  readonly after: string;
}

export function encodePageToken(cursor: PageCursor): string {
  return Buffer.from(JSON.stringify({ v: 1, s: cursor.status, a: cursor.after }), 'utf8').toString('base64url');
}

function invalidToken(description: string): ValidationError {
  return new ValidationError([{ field: 'page_token', rule: 'INVALID', description }]);
}

/**
 * Decodes a page token and checks it was issued for the same status.
 * Throws ValidationError (INVALID_ARGUMENT, field page_token) otherwise.
 */
export function decodePageToken(token: string, status: EvaluationStatus): PageCursor {
  let parsed: unknown;
  try {
    if (!/^[A-Za-z0-9_-]+$/.test(token)) throw new Error('not base64url');
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw invalidToken('page_token must be a next_page_token returned by ListEvaluations');
  }
  const { v, s, a } = (parsed ?? {}) as { v?: unknown; s?: unknown; a?: unknown };
  if (v !== 1 || typeof s !== 'number' || typeof a !== 'string' || !MEMBER_PATTERN.test(a)) {
    throw invalidToken('page_token must be a next_page_token returned by ListEvaluations');
  }
  if (s !== status) {
    throw new ValidationError([
      {
        field: 'page_token',
        rule: 'MISMATCH',
        description:
          'page_token was issued for a different status filter; repeat the first request with the same status',
      },
    ]);
  }
  return { status: s, after: a };
}

/**
 * Merges the newest-first pages of several partitions (each fetched with limit pageSize+1)
 * into one newest-first page of at most pageSize members. `hasMore` is exact: some partition
 * holds a member after the last one returned.
 */
export function mergePages(
  pages: readonly (readonly string[])[],
  pageSize: number,
): { members: string[]; hasMore: boolean } {
  const all = pages.flat();
  // Members are ASCII-comparable strings; descending lexicographic = newest first.
  all.sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
  return { members: all.slice(0, pageSize), hasMore: all.length > pageSize };
}

export interface EvaluationPage {
  readonly evaluations: Encoded<Evaluation>[];
  /** Token for the next page, or "" on the last page. */
  readonly nextPageToken: string;
  /**
   * Ids the index listed without a record: index and record are written in one atomic step,
   * so these records were lost (deleted, evicted), and the page is not the truth.
   */
  readonly missing: string[];
  /** Partitions whose index differed from its count: members were lost (redis/index-counts.ts). */
  readonly damaged: number[];
}

export interface EvaluationList {
  /** One page, newest first; `status` UNSPECIFIED lists every status. */
  page(status: EvaluationStatus, pageSize: number, cursor: PageCursor | undefined): Promise<EvaluationPage>;
}
