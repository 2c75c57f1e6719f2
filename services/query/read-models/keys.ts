import { partitionOf, partitionTag } from '../../../shared/partitions';
import { parseStatus, statusOfProto, statusToProto, STATUSES, TENANT_PATTERN } from '../../../shared/domain';
import type { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';

/**
 * Where every read-model key lives. Partition-ready for Redis Cluster: every key of partition
 * n carries the hash tag `{<prefix>:<n>}`, so all keys one projection step touches hash to one
 * slot and a single Lua script (or MULTI) can write them atomically. With one partition (the
 * default) the tag is constant and everything sits in one slot of one Redis.
 *
 * Keys (P = prefix, n = partition):
 *   P:{P:n}:checkpoint        string  highest global position applied to this partition, and
 *                                     which event of the log it was (checkpoints.ts)
 *   P:{P:n}:fence             string  set while a rebuild owns the partition (its token)
 *   P:{P:n}:eval:<id>         string  ts-proto-encoded Evaluation
 *   P:{P:n}:index:<t>/all     zset    members `<created ms, 15 digits>:<id>`, score 0: every
 *                                     evaluation of tenant t (every index is one tenant's)
 *   P:{P:n}:index:<t>/<status>
 *                             zset    same members, one set per status
 *   P:{P:n}:index:<t>/<status>:<facet>:<value>
 *                             zset    same members, per status and language, engine or executor
 *                                     (evaluation-list.ts): filtered lists and queue counts
 *   P:{P:n}:index-counts      hash    per index key, the members the projection put in it
 *   P:{P:n}:facets            string  which facet indexes are whole (evaluation-list.ts
 *                                     `facetMarker`): written with the first step on an empty
 *                                     partition, or once the records filled them in
 *   P:{P:n}:history:<id>      list    encoded EvaluationUpdate per revision (index = revision-1)
 *   P:{P:n}:changes           stream  entry id `<position>-0`, field `u` = encoded EvaluationUpdate
 */
export interface KeyLayout {
  readonly prefix: string;
  readonly partitions: number;
  /** Metadata keys with a facet index (INDEXED_METADATA_KEYS). */
  readonly indexedMetadataKeys: readonly string[];
  /** Stable partition of an evaluation: FNV-1a (UTF-8) of its id, modulo the partition count. */
  partitionOf(evalId: string): number;
  checkpoint(partition: number): string;
  /** Held by a rebuild: the apply script refuses every other writer while it exists. */
  fence(partition: number): string;
  record(partition: number, evalId: string): string;
  /** Every evaluation of `tenant` in the partition. */
  indexAll(partition: number, tenant: string): string;
  /** Throws for UNSPECIFIED / unknown values: there is no such index. */
  indexStatus(partition: number, tenant: string, status: EvaluationStatus): string;
  /** The index of one status' evaluations (of `tenant`) with one language, engine or executor. */
  indexFacet(partition: number, tenant: string, status: EvaluationStatus, facet: Facet, value: string): string;
  /** What an index key of this layout lists; undefined for any other key. */
  describeIndex(key: string): IndexOf | undefined;
  /** How many members each index of the partition should have (redis/index-counts.ts). */
  indexCounts(partition: number): string;
  /** Which facet indexes of the partition hold every evaluation (evaluation-list.ts `facetMarker`). */
  facets(partition: number): string;
  history(partition: number, evalId: string): string;
  changeLog(partition: number): string;
  /** SCAN MATCH pattern covering every read-model key of this prefix (and nothing else). */
  readonly scanPattern: string;
  /** What a key of this prefix holds (undefined for any other key). */
  describe(key: string): DescribedKey | undefined;
}

/** What an evaluation is listed by within its status, besides the status itself. */
export type Facet = 'language' | 'engine' | 'executor' | 'metadata';

export const FACETS: readonly Facet[] = ['language', 'engine', 'executor', 'metadata'];

/** What one index lists: every evaluation, those of a status, or those of a status and facet value. */
export type IndexOf = { readonly partition: number; readonly tenant: string } & (
  | { readonly status?: undefined; readonly facet?: undefined }
  | { readonly status: EvaluationStatus; readonly facet?: undefined }
  | { readonly status: EvaluationStatus; readonly facet: Facet; readonly value: string }
);

/** A read-model key, by what it holds. */
export type DescribedKey =
  | { readonly kind: 'record' | 'history'; readonly partition: number; readonly evalId: string }
  | {
      readonly kind: 'checkpoint' | 'fence' | 'index' | 'counts' | 'facets' | 'changes';
      readonly partition: number;
    };

/** The statuses that have an index (every stored status), each named as shared/domain names it. */
export const INDEXED_STATUSES: readonly EvaluationStatus[] = STATUSES.map(statusToProto);

export function createKeyLayout(
  prefix: string,
  partitions: number,
  indexedMetadataKeys: readonly string[] = [],
): KeyLayout {
  if (!Number.isInteger(partitions) || partitions < 1)
    throw new RangeError(`partitions must be >= 1, not ${partitions}`);
  const base = (partition: number): string => `${prefix}:${partitionTag(prefix, partition)}`;
  return Object.freeze({
    prefix,
    partitions,
    indexedMetadataKeys,
    partitionOf: (evalId: string) => partitionOf(evalId, partitions),
    checkpoint: (p: number) => `${base(p)}:checkpoint`,
    fence: (p: number) => `${base(p)}:fence`,
    record: (p: number, evalId: string) => `${base(p)}:eval:${evalId}`,
    // A tenant name has no "/" (TENANT_PATTERN): the first one ends it.
    indexAll: (p: number, tenant: string) => `${base(p)}:index:${tenant}/all`,
    indexStatus: (p: number, tenant: string, status: EvaluationStatus) => {
      const name = statusOfProto(status);
      if (name === undefined) throw new RangeError(`no index for status ${status}`);
      return `${base(p)}:index:${tenant}/${name}`;
    },
    indexFacet: (p: number, tenant: string, status: EvaluationStatus, facet: Facet, value: string) => {
      const name = statusOfProto(status);
      if (name === undefined) throw new RangeError(`no index for status ${status}`);
      return `${base(p)}:index:${tenant}/${name}:${facet}:${value}`;
    },
    describeIndex(key: string): IndexOf | undefined {
      const head = `${prefix}:{${prefix}:`;
      if (!key.startsWith(head)) return undefined;
      const close = key.indexOf('}:index:', head.length);
      if (close < 0) return undefined;
      const partition = Number(key.slice(head.length, close));
      if (!Number.isInteger(partition) || partition < 0 || partition >= partitions) return undefined;
      const scoped = key.slice(close + '}:index:'.length);
      const slash = scoped.indexOf('/');
      const tenant = scoped.slice(0, slash);
      if (slash < 0 || !TENANT_PATTERN.test(tenant)) return undefined;
      const rest = scoped.slice(slash + 1);
      if (rest === 'all') return { partition, tenant };
      const [name = '', facet, ...value] = rest.split(':');
      const status = parseStatus(name);
      if (status === undefined) return undefined;
      if (facet === undefined) return { partition, tenant, status: statusToProto(status) };
      if (!(FACETS as readonly string[]).includes(facet) || value.length === 0) return undefined;
      return { partition, tenant, status: statusToProto(status), facet: facet as Facet, value: value.join(':') };
    },
    indexCounts: (p: number) => `${base(p)}:index-counts`,
    facets: (p: number) => `${base(p)}:facets`,
    history: (p: number, evalId: string) => `${base(p)}:history:${evalId}`,
    changeLog: (p: number) => `${base(p)}:changes`,
    scanPattern: `${prefix}:{${prefix}:*}:*`,
    describe(key: string): DescribedKey | undefined {
      const head = `${prefix}:{${prefix}:`;
      if (!key.startsWith(head)) return undefined;
      const close = key.indexOf('}:', head.length);
      if (close < 0) return undefined;
      const partition = Number(key.slice(head.length, close));
      if (!Number.isInteger(partition) || partition < 0 || partition >= partitions) return undefined;
      const rest = key.slice(close + 2);
      if (rest.startsWith('eval:')) return { kind: 'record', partition, evalId: rest.slice(5) };
      if (rest.startsWith('history:')) return { kind: 'history', partition, evalId: rest.slice(8) };
      if (rest === 'checkpoint' || rest === 'fence' || rest === 'changes' || rest === 'facets')
        return { kind: rest, partition };
      if (rest.startsWith('index:')) return { kind: 'index', partition };
      if (rest === 'index-counts') return { kind: 'counts', partition };
      return undefined;
    },
  });
}

/** 0 .. partitions-1, for loops over every partition. */
export function partitionNumbers(layout: Pick<KeyLayout, 'partitions'>): number[] {
  return Array.from({ length: layout.partitions }, (_, i) => i);
}

/**
 * The indexes of one tenant in a partition: the index of all its evaluations first, then one
 * per status in INDEXED_STATUSES order.
 */
export function indexKeysOf(layout: KeyLayout, partition: number, tenant: string): string[] {
  return [
    layout.indexAll(partition, tenant),
    ...INDEXED_STATUSES.map((status) => layout.indexStatus(partition, tenant, status)),
  ];
}

/** Evaluation ids grouped by their partition, each group in the order given. */
export function idsByPartition(
  layout: Pick<KeyLayout, 'partitionOf'>,
  evalIds: Iterable<string>,
): Map<number, string[]> {
  const groups = new Map<number, string[]>();
  for (const id of evalIds) {
    const p = layout.partitionOf(id);
    const ids = groups.get(p);
    if (ids === undefined) groups.set(p, [id]);
    else ids.push(id);
  }
  return groups;
}
