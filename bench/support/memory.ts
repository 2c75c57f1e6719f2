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
  // A process that exits while watched stops the sampling (the work it was doing fails and says
  // why); it must not take the bench down with an exception from a timer.
  let gone = false;
  const timer = setInterval(() => {
    try {
      sampledPeak = Math.max(sampledPeak, readMemory(pid).rssMiB);
    } catch {
      gone = true;
      clearInterval(timer);
    }
  }, 20);
  return {
    stop() {
      clearInterval(timer);
      if (gone) throw new Error(`process ${pid} exited while its memory was watched`);
      const now = readMemory(pid);
      const peakMiB = Math.max(sampledPeak, now.rssMiB, reset ? now.peakMiB : 0);
      return { baselineMiB, peakMiB, growthMiB: peakMiB - baselineMiB };
    },
  };
}
