import { readFileSync, writeFileSync } from 'node:fs';

const MiB = 1024 * 1024;

/** Resident set size now and its peak (VmHWM) of a process, in MiB, from /proc/<pid>/status. */
export function readMemory(pid: number): { rssMiB: number; peakMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: (kib('VmRSS') * 1024) / MiB, peakMiB: (kib('VmHWM') * 1024) / MiB };
}

/**
 * Watches a process's peak RSS over a stretch of work. The kernel's peak (VmHWM) is reset
 * first (writing 5 to clear_refs), so it covers only that stretch; where that is not allowed,
 * sampling every 20 ms gives a lower bound.
 */
export function watchPeakMemory(pid: number): { stop(): { baselineMiB: number; peakMiB: number; growthMiB: number } } {
  let reset = true;
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    reset = false;
  }
  const baselineMiB = readMemory(pid).rssMiB;
  let sampledPeak = baselineMiB;
  const timer = setInterval(() => {
    sampledPeak = Math.max(sampledPeak, readMemory(pid).rssMiB);
  }, 20);
  return {
    stop() {
      clearInterval(timer);
      const now = readMemory(pid);
      const peakMiB = Math.max(sampledPeak, now.rssMiB, reset ? now.peakMiB : 0);
      return { baselineMiB, peakMiB, growthMiB: peakMiB - baselineMiB };
    },
  };
}
