import type { MetricSummary } from '../generated/crucible/storage/v1/evaluation';
import type { MetricBatchSummary } from './events';
import { compareCodeUnits } from './order';

/** A metric point with its timestamp settled (the service's clock when the reporter gave none). */
export interface MetricPoint {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  /** Decimal string (int64, 0 or more); absent when the reporter gave none. */
  readonly step?: string;
  /** ISO-8601 */
  readonly timestamp: string;
}

/**
 * Where a point stands in its metric's order: by step (a point without one before any with
 * one), then by timestamp. Between two points of equal rank the later recorded is the latest.
 */
function rank(step: string | undefined, timestamp: string | Date | undefined): [bigint, number] {
  const time = timestamp === undefined ? 0 : new Date(timestamp).getTime();
  return [step === undefined ? -1n : BigInt(step), time];
}

/** Whether a point of rank `b` is at least as late as one of rank `a` (so it replaces it as the latest). */
function atLeastAsLate(a: [bigint, number], b: [bigint, number]): boolean {
  return b[0] > a[0] || (b[0] === a[0] && b[1] >= a[1]);
}

/** The points of one call summed up per metric name, ordered by name (an event's data). */
export function summarizeBatch(points: readonly MetricPoint[]): MetricBatchSummary[] {
  const byName = new Map<string, { summary: MetricBatchSummary; rank: [bigint, number] }>();
  for (const point of points) {
    const pointRank = rank(point.step, point.timestamp);
    const latest = {
      unit: point.unit,
      lastValue: point.value,
      lastTimestamp: point.timestamp,
      ...(point.step !== undefined ? { lastStep: point.step } : {}),
    };
    const seen = byName.get(point.name);
    if (seen === undefined) {
      byName.set(point.name, {
        summary: { name: point.name, count: 1, min: point.value, max: point.value, ...latest },
        rank: pointRank,
      });
      continue;
    }
    const { summary } = seen;
    const later = atLeastAsLate(seen.rank, pointRank);
    const { lastStep: _lastStep, ...withoutStep } = summary;
    seen.summary = {
      ...(later ? withoutStep : summary),
      count: summary.count + 1,
      min: Math.min(summary.min, point.value),
      max: Math.max(summary.max, point.value),
      ...(later ? latest : {}),
    };
    if (later) seen.rank = pointRank;
  }
  return [...byName.values()].map(({ summary }) => summary).sort((a, b) => compareCodeUnits(a.name, b.name));
}

/**
 * An evaluation's summaries (ordered by name) with one call's folded in: counts added, min and
 * max widened, the latest point replaced when the call's is at least as late. Exact, and the
 * same whoever folds it (projection, rebuild, consistency checker).
 */
export function foldMetrics(
  summaries: readonly MetricSummary[],
  batch: readonly MetricBatchSummary[],
): MetricSummary[] {
  const merged = new Map(summaries.map((summary) => [summary.name, summary]));
  for (const added of batch) {
    const latest: Pick<MetricSummary, 'unit' | 'lastValue' | 'lastStep' | 'lastTimestamp'> = {
      unit: added.unit,
      lastValue: added.lastValue,
      lastStep: added.lastStep,
      lastTimestamp: new Date(added.lastTimestamp),
    };
    const current = merged.get(added.name);
    if (current === undefined) {
      merged.set(added.name, {
        name: added.name,
        count: String(added.count),
        min: added.min,
        max: added.max,
        ...latest,
      });
      continue;
    }
    const later = atLeastAsLate(
      rank(current.lastStep, current.lastTimestamp),
      rank(added.lastStep, added.lastTimestamp),
    );
    merged.set(added.name, {
      ...current,
      count: String(BigInt(current.count) + BigInt(added.count)),
      min: Math.min(current.min, added.min),
      max: Math.max(current.max, added.max),
      ...(later ? latest : {}),
    });
  }
  return [...merged.values()].sort((a, b) => compareCodeUnits(a.name, b.name));
}
