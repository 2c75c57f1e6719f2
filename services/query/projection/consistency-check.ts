import type { RedisClient } from '../../../shared/redis';
import { compareCodeUnits, DEFAULT_TENANT, evolve, isTerminalProto, type RecordedEvent } from '../../../shared/domain';
import { Evaluation, EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { parseCheckpoint } from '../read-models/checkpoints';
import { createCheckpoints } from '../redis/checkpoints';
import { readCountedIndexes } from '../redis/index-counts';
import { decodeRecord } from '../read-models/evaluation-record';
import { indexKeysOfEvaluation, listMember, possibleIndexKeys } from '../read-models/evaluation-list';
import { idsByPartition, indexKeysOf, partitionNumbers, type KeyLayout } from '../read-models/keys';

/** What the checker reads from the source of truth (PostgreSQL: postgres/event-log.ts). */
export interface EvaluationSource {
  /** Evaluation ids above `after` in id order, at most `limit`; archived ones are not (the archive holds them). */
  evaluationIds(after: string, limit: number): Promise<string[]>;
  /** Those of `evalIds` that are archived (their events may have left the log). */
  archived(evalIds: readonly string[]): Promise<ReadonlySet<string>>;
  /** The events of these evaluations with a position up to `upTo`, in position order. */
  eventsOfMany(evalIds: readonly string[], upTo: bigint): Promise<RecordedEvent[]>;
}

export interface ConsistencyReport {
  readonly evaluations: number;
  readonly partitionCheckpoints: readonly bigint[];
  readonly differences: string[];
}

/** An Evaluation as JSON with sorted keys: equal states compare equal whatever the key order. */
export function canonical(evaluation: Evaluation): string {
  const sort = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(sort);
    if (value !== null && typeof value === 'object') {
      return Object.fromEntries(
        Object.entries(value as Record<string, unknown>)
          .sort(([a], [b]) => compareCodeUnits(a, b))
          .map(([k, v]) => [k, sort(v)]),
      );
    }
    return value;
  };
  return JSON.stringify(sort(Evaluation.toJSON(evaluation)));
}

function fieldDifferences(expected: Evaluation, actual: Evaluation): string[] {
  const a = JSON.parse(canonical(expected)) as Record<string, unknown>;
  const b = JSON.parse(canonical(actual)) as Record<string, unknown>;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys]
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
    .map((k) => `${k}: expected ${JSON.stringify(a[k])}, read model has ${JSON.stringify(b[k])}`);
}

/** Far above any position: "every event of these evaluations so far". */
const ALL_POSITIONS = (1n << 62n) - 1n;

/** One evaluation's keys as one MULTI read them, with its partition's checkpoint of that moment. */
interface Snapshot {
  readonly checkpoint: bigint;
  readonly record: Buffer | null;
  readonly history: Buffer[];
  /** Per index key, whether the evaluation's member is in it. */
  readonly inIndex: ReadonlyMap<string, boolean>;
}

/**
 * Compares every evaluation of the event log with the read models. For each page of
 * evaluations, one MULTI per partition reads the partition's checkpoint together with the
 * page's records, histories and index memberships, and the log's events up to that checkpoint
 * are folded with `evolve`: the check is exact even while the projection (or a rebuild) runs.
 * Reports, per evaluation: a missing or extra record, differing fields, a history that is not
 * revisions 1..n ending in the current state, and index entries that are missing or in the
 * wrong status. Also reports index entries of evaluations the log does not have.
 */
export async function checkConsistency(deps: {
  readonly source: EvaluationSource;
  readonly redis: RedisClient;
  readonly layout: KeyLayout;
  readonly pageSize?: number;
  /** States the read models do not hold: past HOT_RETENTION (read-models/hot-retention.ts), when swept. */
  readonly keepsOut?: (state: Evaluation) => boolean;
}): Promise<ConsistencyReport> {
  const { source, redis, layout } = deps;
  const keepsOut = deps.keepsOut ?? ((): boolean => false);
  const pageSize = deps.pageSize ?? 500;
  // The lowest checkpoint each partition was compared at (all equal once the projection rests).
  const compared: (bigint | undefined)[] = partitionNumbers(layout).map(() => undefined);
  const differences: string[] = [];
  const known = new Set<string>();
  let count = 0;

  for (let after = ''; ;) {
    const ids = await source.evaluationIds(after, pageSize);
    if (ids.length === 0) break;
    after = ids[ids.length - 1] ?? after;
    count += ids.length;
    for (const id of ids) known.add(id);
    // The first events give the index members (creation time and id never change); the events
    // to fold are read after the snapshot, so that none it covers is missing.
    const snapshots = await readSnapshots(
      redis,
      layout,
      ids,
      groupByEvaluation(await source.eventsOfMany(ids, ALL_POSITIONS)),
    );
    const upTo = [...snapshots.values()].reduce((m, s) => (s.checkpoint > m ? s.checkpoint : m), 0n);
    const eventsOf = groupByEvaluation(await source.eventsOfMany(ids, upTo));
    for (const id of ids) {
      const snapshot = snapshots.get(id);
      if (snapshot === undefined) continue;
      const p = layout.partitionOf(id);
      const seen = compared[p];
      if (seen === undefined || snapshot.checkpoint < seen) compared[p] = snapshot.checkpoint;
      differences.push(...compare(id, eventsOf.get(id) ?? [], snapshot, layout, keepsOut).map((d) => `${id}: ${d}`));
    }
  }

  for (const p of partitionNumbers(layout)) {
    // Every index of the partition, its count and its size, read together (each tenant's index
    // is counted once it has had a member).
    const { counts, keys, sizes } = await readCountedIndexes(redis, layout, p);
    // Index entries of evaluations the log does not know (one may have been submitted since its
    // page was listed: those are asked for again), in every tenant's index of all evaluations.
    const allIndexes = keys.filter((key) => layout.describeIndex(key)?.status === undefined);
    const members = (await Promise.all(allIndexes.map((key) => redis.zrange(key, 0, -1)))).flat();
    const unknown = members.map((member) => member.slice(member.indexOf(':') + 1)).filter((id) => !known.has(id));
    const inLog = new Set((await source.eventsOfMany(unknown, ALL_POSITIONS)).map((e) => e.evalId));
    // An archived evaluation's record may stay until the HOT_RETENTION sweep takes it out.
    const archived = await source.archived(unknown.filter((id) => !inLog.has(id)));
    for (const id of unknown)
      if (!inLog.has(id) && !archived.has(id))
        differences.push(`${id}: in the read model (partition ${p}) but not in the event log`);
    // Every index the size its count says (redis/index-counts.ts).
    keys.forEach((key, k) => {
      const count = counts.get(key) ?? 0;
      const size = Number(sizes[k]);
      if (count !== size) differences.push(`index ${key} holds ${size} members, its count says ${count}`);
    });
  }
  // A partition none of whose evaluations was compared is reported at its checkpoint now.
  const now = compared.includes(undefined) ? await createCheckpoints(redis, layout).readAll() : [];
  const partitionCheckpoints = compared.map((c, p) => c ?? now[p] ?? 0n);
  return { evaluations: count, partitionCheckpoints, differences };
}

function groupByEvaluation(events: readonly RecordedEvent[]): Map<string, RecordedEvent[]> {
  const byEvaluation = new Map<string, RecordedEvent[]>();
  for (const event of events) {
    const list = byEvaluation.get(event.evalId);
    if (list === undefined) byEvaluation.set(event.evalId, [event]);
    else list.push(event);
  }
  return byEvaluation;
}

/** Per partition one MULTI: its checkpoint, then each evaluation's record, history and memberships. */
async function readSnapshots(
  redis: RedisClient,
  layout: KeyLayout,
  ids: readonly string[],
  eventsOf: ReadonlyMap<string, readonly RecordedEvent[]>,
): Promise<Map<string, Snapshot>> {
  const byPartition = idsByPartition(layout, ids);
  const snapshots = new Map<string, Snapshot>();
  // The indexes an evaluation could be in follow from its whole log (its executor is set once).
  const possibleKeys = (p: number, id: string): string[] => {
    let state: Evaluation | undefined;
    for (const event of eventsOf.get(id) ?? []) state = evolve(state, event);
    return state === undefined ? indexKeysOf(layout, p, DEFAULT_TENANT) : possibleIndexKeys(layout, p, state);
  };
  await Promise.all(
    [...byPartition].map(async ([p, partitionIds]) => {
      const tx = redis.multi().get(layout.checkpoint(p));
      const keysOf = new Map(partitionIds.map((id) => [id, possibleKeys(p, id)]));
      for (const id of partitionIds) {
        tx.getBuffer(layout.record(p, id)).lrangeBuffer(layout.history(p, id), 0, -1);
        // The member is fixed by the first event (creation time and id), whatever came after.
        const first = eventsOf.get(id)?.[0];
        const member = first === undefined ? '' : listMember(evolve(undefined, first));
        for (const key of keysOf.get(id) ?? []) tx.zscore(key, member);
      }
      const replies = (await tx.exec()) ?? [];
      for (const [err] of replies) if (err !== null) throw err;
      const checkpoint = parseCheckpoint(replies[0]?.[1] as string | null);
      let at = 1;
      for (const id of partitionIds) {
        const record = replies[at++]?.[1] as Buffer | null;
        const history = replies[at++]?.[1] as Buffer[];
        const inIndex = new Map<string, boolean>();
        for (const key of keysOf.get(id) ?? []) inIndex.set(key, (replies[at++]?.[1] ?? null) !== null);
        snapshots.set(id, { checkpoint, record, history, inIndex });
      }
    }),
  );
  return snapshots;
}

/** What is wrong with one evaluation's read model, given its events and its snapshot. */
function compare(
  id: string,
  events: readonly RecordedEvent[],
  snapshot: Snapshot,
  layout: KeyLayout,
  keepsOut: (state: Evaluation) => boolean,
): string[] {
  const differences: string[] = [];
  const p = layout.partitionOf(id);
  let want: Evaluation | undefined;
  for (const event of events) {
    if (BigInt(event.position) > snapshot.checkpoint) break;
    try {
      want = evolve(want, event);
    } catch (err) {
      differences.push(`the event log does not fold at position ${event.position}: ${String(err)}`);
      return differences;
    }
  }
  let record: Evaluation | undefined;
  try {
    record = snapshot.record === null ? undefined : decodeRecord(snapshot.record);
  } catch {
    return [...differences, 'the record cannot be decoded'];
  }
  const history: EvaluationUpdate[] = [];
  for (const [index, bytes] of snapshot.history.entries()) {
    try {
      history.push(EvaluationUpdate.decode(bytes));
    } catch {
      differences.push(`history entry ${index + 1} cannot be decoded`);
      history.push(EvaluationUpdate.fromPartial({}));
    }
  }
  if (want === undefined) {
    if (record !== undefined)
      differences.push(`the read model has a record before its first event (checkpoint ${snapshot.checkpoint})`);
    return differences;
  }
  // Taken out past HOT_RETENTION: neither the record nor any index membership is expected.
  const out = record === undefined && keepsOut(want);
  if (record === undefined) {
    if (!out) differences.push(`record missing (expected revision ${want.revision})`);
  } else differences.push(...fieldDifferences(want, record));
  if (isTerminalProto(want.status)) {
    // An ended evaluation keeps no history (read-models/evaluation-history.ts).
    if (history.length > 0)
      differences.push(
        `history of an ended evaluation kept (${history.length} updates; a rebuild compacts histories written before they were dropped at the end)`,
      );
  } else {
    if (String(history.length) !== want.revision)
      differences.push(`history has ${history.length} updates, expected ${want.revision}`);
    history.forEach((u, index) => {
      if (u.revision !== String(index + 1)) differences.push(`history entry ${index + 1} has revision ${u.revision}`);
    });
    // Later entries are stored without the metadata the first one holds (read-models/stored-update.ts).
    const last = history[history.length - 1]?.evaluation;
    const lastUpdate = last && { ...last, metadata: last.metadata ?? history[0]?.evaluation?.metadata };
    if (lastUpdate !== undefined && canonical(lastUpdate) !== canonical(want))
      differences.push('the latest history entry differs from the state folded from the log');
  }
  const listedIn = new Set(out ? [] : indexKeysOfEvaluation(layout, p, want));
  for (const [key, present] of snapshot.inIndex) {
    const wanted = listedIn.has(key);
    if (present !== wanted) {
      const what = layout.describeIndex(key)?.status === undefined ? 'index of all evaluations' : `index ${key}`;
      differences.push(`${wanted ? 'missing from' : 'wrongly in'} the ${what}`);
    }
  }
  return differences;
}
