import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLatencyRecorder, median, type LatencySummary } from './stats';

/** Outcome of one load run: completed operations per second and their latency. */
export interface LoadResult {
  readonly ops: number;
  readonly seconds: number;
  readonly rate: number;
  readonly latency: LatencySummary;
}

export interface ClosedLoopOptions {
  /** Operations in flight at any time: each worker starts the next one when its last ends. */
  readonly concurrency: number;
  /** Measured time; operations that end within it count. */
  readonly durationMs: number;
  /** Time run first and not measured (connections, JIT, caches). */
  readonly warmupMs: number;
  /** One operation; `worker` is 0..concurrency-1, `iteration` counts that worker's calls. */
  readonly op: (worker: number, iteration: number) => Promise<unknown>;
}

/**
 * Closed-loop load: `concurrency` workers each run operations back to back. A failed
 * operation stops the run: a benchmark that measures errors measures nothing.
 */
export async function closedLoop(options: ClosedLoopOptions): Promise<LoadResult> {
  const latency = createLatencyRecorder();
  const start = process.hrtime.bigint();
  const measureFrom = start + BigInt(Math.round(options.warmupMs * 1e6));
  const end = measureFrom + BigInt(Math.round(options.durationMs * 1e6));
  let ops = 0;
  const worker = async (index: number): Promise<void> => {
    for (let iteration = 0; ; iteration++) {
      const before = process.hrtime.bigint();
      if (before >= end) return;
      await options.op(index, iteration);
      const after = process.hrtime.bigint();
      if (after >= measureFrom && after < end) {
        ops++;
        latency.recordNs(Number(after - before));
      }
    }
  };
  await withWatchdog(
    Promise.all(Array.from({ length: options.concurrency }, (_, i) => worker(i))),
    options.warmupMs + options.durationMs + STALL_MS,
  );
  const seconds = options.durationMs / 1000;
  return { ops, seconds, rate: ops / seconds, latency: latency.summary() };
}

/** How long operations may still run after a load run's end before it counts as stuck. */
const STALL_MS = 30_000;

/** Rejects when `work` takes longer than `ms` (a service that stopped answering). */
export async function withWatchdog<T>(work: Promise<T>, ms: number, what = 'load run'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} still running after ${Math.round(ms / 1000)} s: a call never returned`)),
      ms,
    );
  });
  try {
    return await Promise.race([work, stalled]);
  } finally {
    clearTimeout(timer);
  }
}

export interface OpenLoopOptions {
  /** Operations started per second, whatever the previous ones are doing. */
  readonly ratePerSecond: number;
  readonly durationMs: number;
  readonly op: (index: number) => Promise<unknown>;
  /** How long the operations may take to finish after the last one started (default 30 s). */
  readonly drainMs?: number;
}

export interface OpenLoopResult {
  readonly started: number;
  /** Operations that failed (an overloaded service may shed load), and the first error. */
  readonly failed: number;
  readonly firstError?: string;
  /** Operations started per second (the offered load). */
  readonly startRate: number;
  /** Operations that succeeded per second, from the first start to the last end (what the system kept up with). */
  readonly completionRate: number;
}

/**
 * Open-loop load: starts operations on a fixed schedule, whatever the previous ones are
 * doing (each timer tick starts every operation that is due), then waits for all of them.
 * Failures are counted, not thrown: under an offered load above its capacity a service may
 * refuse work, and that is a result.
 */
export async function openLoop(options: OpenLoopOptions): Promise<OpenLoopResult> {
  const total = Math.max(2, Math.round((options.ratePerSecond * options.durationMs) / 1000));
  const intervalMs = 1000 / options.ratePerSecond;
  const inFlight: Promise<unknown>[] = [];
  let failed = 0;
  let firstError: string | undefined;
  const start = performance.now();
  let lastStartedAt = start;
  for (let next = 0; next < total;) {
    const due = Math.min(total, Math.floor((performance.now() - start) / intervalMs) + 1);
    for (; next < due; next++) {
      inFlight.push(
        options.op(next).catch((err: unknown) => {
          failed++;
          firstError ??= err instanceof Error ? err.message : String(err);
        }),
      );
    }
    lastStartedAt = performance.now();
    await sleep(Math.max(0, start + next * intervalMs - lastStartedAt));
  }
  await withWatchdog(Promise.all(inFlight), options.drainMs ?? STALL_MS, 'open-loop run');
  return {
    started: total,
    failed,
    ...(firstError !== undefined ? { firstError } : {}),
    startRate: ((total - 1) * 1000) / Math.max(lastStartedAt - start, intervalMs),
    completionRate: ((total - failed) * 1000) / (performance.now() - start),
  };
}

/** Runs `fn` over `items` with at most `concurrency` calls in flight (setup work). */
export async function forEachConcurrently<T>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T, index: number) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      await fn(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

/** A load target measured in alternating rounds beside the others (drift hits all alike). */
export interface LoadTarget {
  readonly name: string;
  run(): Promise<LoadResult>;
}

/** Median over rounds of each figure (rate, p50, p99) of each target, keyed by target name. */
export async function interleave(
  targets: readonly LoadTarget[],
  rounds: number,
  onRound?: (target: string, round: number) => void,
): Promise<Map<string, LoadResult>> {
  const results = new Map<string, LoadResult[]>(targets.map((t) => [t.name, []]));
  for (let round = 0; round < rounds; round++) {
    // Alternate the order so that neither target always runs right after the other.
    const ordered = round % 2 === 0 ? targets : [...targets].reverse();
    for (const target of ordered) {
      onRound?.(target.name, round);
      results.get(target.name)!.push(await target.run());
    }
  }
  return new Map(
    [...results].map(([name, runs]) => [
      name,
      {
        ops: runs.reduce((sum, r) => sum + r.ops, 0),
        seconds: runs.reduce((sum, r) => sum + r.seconds, 0),
        rate: median(runs.map((r) => r.rate)),
        latency: {
          count: runs.reduce((sum, r) => sum + r.latency.count, 0),
          p50Ms: median(runs.map((r) => r.latency.p50Ms)),
          p99Ms: median(runs.map((r) => r.latency.p99Ms)),
          maxMs: Math.max(...runs.map((r) => r.latency.maxMs)),
        },
      },
    ]),
  );
}
