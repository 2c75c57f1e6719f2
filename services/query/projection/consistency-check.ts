import type { Redis } from 'ioredis';
import { evolve, type RecordedEvent } from '../../../shared/domain';
import { Evaluation, EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { createCheckpoints } from '../redis/checkpoints';
import { decodeRecord } from '../read-models/evaluation-record';
import { listMember } from '../read-models/evaluation-list';
import { INDEXED_STATUSES, partitionNumbers, type KeyLayout } from '../read-models/keys';

/** What the checker reads from the source of truth (PostgreSQL: postgres/event-log.ts). */
export interface EvaluationSource {
  /** Evaluation ids above `after` in id order, at most `limit`. */
  evaluationIds(after: string, limit: number): Promise<string[]>;
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
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
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

/**
 * Compares every evaluation of the event log with the read models: each partition is
 * compared at its own checkpoint (the log's events up to it are folded with `evolve`), so the
 * check is exact even while the projection runs. Reports, per evaluation: a missing or extra
 * record, differing fields, a history that is not revisions 1..n ending in the current state,
 * and index entries that are missing or in the wrong status. Also reports index entries and
 * records of evaluations the log does not have.
 */
export async function checkConsistency(deps: {
  readonly source: EvaluationSource;
  readonly redis: Redis;
  readonly layout: KeyLayout;
  readonly pageSize?: number;
}): Promise<ConsistencyReport> {
  const { source, redis, layout } = deps;
  const pageSize = deps.pageSize ?? 500;
  const checkpoints = await createCheckpoints(redis, layout).readAll();
  const maxCheckpoint = checkpoints.reduce((m, c) => (c > m ? c : m), 0n);
  const differences: string[] = [];
  const known = new Set<string>();
  let count = 0;

  for (let after = ''; ;) {
    const ids = await source.evaluationIds(after, pageSize);
    if (ids.length === 0) break;
    after = ids[ids.length - 1] ?? after;
    count += ids.length;
    for (const id of ids) known.add(id);
    const events = await source.eventsOfMany(ids, maxCheckpoint);
    const expected = new Map<string, Evaluation>();
    for (const event of events) {
      const p = layout.partitionOf(event.evalId);
      if (BigInt(event.position) > (checkpoints[p] ?? 0n)) continue;
      try {
        expected.set(event.evalId, evolve(expected.get(event.evalId), event));
      } catch (err) {
        differences.push(`${event.evalId}: the event log does not fold at position ${event.position}: ${String(err)}`);
      }
    }
    const pipeline = redis.pipeline();
    for (const id of ids) {
      const p = layout.partitionOf(id);
      pipeline.getBuffer(layout.record(p, id));
      pipeline.lrangeBuffer(layout.history(p, id), 0, -1);
    }
    const replies = (await pipeline.exec()) ?? [];
    const membership = redis.pipeline();
    const memberChecks: { id: string; key: string; want: boolean; what: string }[] = [];
    ids.forEach((id, i) => {
      const p = layout.partitionOf(id);
      const [recordErr, recordBytes] = replies[2 * i] ?? [];
      const [historyErr, historyEntries] = replies[2 * i + 1] ?? [];
      if (recordErr || historyErr) {
        differences.push(`${id}: could not read the read model: ${String(recordErr ?? historyErr)}`);
        return;
      }
      const want = expected.get(id);
      let record: Evaluation | undefined;
      try {
        record = recordBytes === null ? undefined : decodeRecord(recordBytes as Buffer);
      } catch {
        differences.push(`${id}: the record cannot be decoded`);
        return;
      }
      const history: EvaluationUpdate[] = [];
      for (const [index, bytes] of (historyEntries as Buffer[]).entries()) {
        try {
          history.push(EvaluationUpdate.decode(bytes));
        } catch {
          differences.push(`${id}: history entry ${index + 1} cannot be decoded`);
          history.push(EvaluationUpdate.fromPartial({}));
        }
      }
      if (want === undefined) {
        if (record !== undefined)
          differences.push(`${id}: the read model has a record before its first event (checkpoint ${checkpoints[p]})`);
        return;
      }
      if (record === undefined) {
        differences.push(`${id}: record missing (expected revision ${want.revision})`);
      } else {
        for (const d of fieldDifferences(want, record)) differences.push(`${id}: ${d}`);
      }
      if (String(history.length) !== want.revision) {
        differences.push(`${id}: history has ${history.length} updates, expected ${want.revision}`);
      }
      history.forEach((u, index) => {
        if (u.revision !== String(index + 1))
          differences.push(`${id}: history entry ${index + 1} has revision ${u.revision}`);
      });
      const lastUpdate = history[history.length - 1]?.evaluation;
      if (lastUpdate !== undefined && canonical(lastUpdate) !== canonical(want)) {
        differences.push(`${id}: the latest history entry differs from the state folded from the log`);
      }
      const member = listMember(want);
      memberChecks.push({ id, key: layout.indexAll(p), want: true, what: 'index of all evaluations' });
      for (const status of INDEXED_STATUSES) {
        memberChecks.push({
          id,
          key: layout.indexStatus(p, status),
          want: status === want.status,
          what: `index ${layout.indexStatus(p, status)}`,
        });
      }
      for (const check of memberChecks.slice(-1 - INDEXED_STATUSES.length)) membership.zscore(check.key, member);
    });
    const memberReplies = (await membership.exec()) ?? [];
    memberChecks.forEach((check, i) => {
      const present = memberReplies[i]?.[1] !== null && memberReplies[i]?.[1] !== undefined;
      if (present !== check.want)
        differences.push(`${check.id}: ${check.want ? 'missing from' : 'wrongly in'} the ${check.what}`);
    });
  }

  // Entries of evaluations the log does not know.
  for (const p of partitionNumbers(layout)) {
    const members = await redis.zrange(layout.indexAll(p), 0, -1);
    for (const member of members) {
      const id = member.slice(member.indexOf(':') + 1);
      if (!known.has(id)) differences.push(`${id}: in the read model (partition ${p}) but not in the event log`);
    }
  }
  return { evaluations: count, partitionCheckpoints: checkpoints, differences };
}
