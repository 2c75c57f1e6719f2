import { performance } from 'node:perf_hooks';

const started = performance.now();

/** Prints one progress line on stderr (stdout is kept for the result table). */
export function progress(message: string): void {
  const seconds = Math.round((performance.now() - started) / 1000);
  const clock = `${String(Math.floor(seconds / 60)).padStart(2, '0')}:${String(seconds % 60).padStart(2, '0')}`;
  process.stderr.write(`[bench ${clock}] ${message}\n`);
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes of one machine. */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}
