import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';

/** Latency percentiles in milliseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

/** An HDR histogram of latencies recorded in nanoseconds (3 significant digits). */
export interface LatencyRecorder {
  recordNs(ns: number): void;
  recordMs(ms: number): void;
  summary(): LatencySummary;
}

export function createLatencyRecorder(): LatencyRecorder {
  const histogram: RecordableHistogram = createHistogram();
  return {
    recordNs: (ns) => histogram.record(Math.max(1, Math.round(ns))),
    recordMs: (ms) => histogram.record(Math.max(1, Math.round(ms * 1e6))),
    summary: () => ({
      count: histogram.count,
      p50Ms: histogram.count === 0 ? NaN : histogram.percentile(50) / 1e6,
      p99Ms: histogram.count === 0 ? NaN : histogram.percentile(99) / 1e6,
      maxMs: histogram.count === 0 ? NaN : histogram.max / 1e6,
    }),
  };
}

export function median(values: readonly number[]): number {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Percentile (0-100) of a list of numbers, nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}
