import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** Linux reports process times in clock ticks of 1/100 s (USER_HZ, fixed at 100 on x86_64). */
const TICKS_PER_SECOND = 100;

/** CPU seconds used by each process of the machine, and by the whole machine, at one instant. */
interface CpuSnapshot {
  readonly perPid: Map<number, { comm: string; seconds: number }>;
  /** Busy time of all cores together (everything but idle and iowait) from /proc/stat. */
  readonly machineBusySeconds: number;
}

function snapshot(): CpuSnapshot {
  const perPid = new Map<number, { comm: string; seconds: number }>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // exited since the listing
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ')'.
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after "state".
    const ticks = Number(fields[11]) + Number(fields[12]);
    perPid.set(pid, { comm, seconds: ticks / TICKS_PER_SECOND });
  }
  const cpu = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = cpu;
  return { perPid, machineBusySeconds: (user + nice + system + irq + softirq + steal) / TICKS_PER_SECOND };
}

/** Which processes a figure is about: a name, and the pids or process names that belong to it. */
export interface CpuGroup {
  readonly name: string;
  readonly pids?: readonly number[];
  readonly comm?: string;
}

export interface CpuUse {
  /** CPU seconds of each group, in the order given. */
  readonly groups: { name: string; seconds: number }[];
  /** CPU seconds of the whole machine (every process, kernel work included). */
  readonly machineSeconds: number;
  readonly wallSeconds: number;
}

/**
 * Measures the CPU time spent by groups of processes (a service, every PostgreSQL backend,
 * Redis, the bench itself) and by the whole machine over a stretch of work: what one unit of
 * work costs in CPU, which bounds the rate the machine's cores can sustain whatever the
 * latency. Processes that start during the stretch count from zero; those that exit are lost.
 */
export function measureCpu(groups: readonly CpuGroup[]): { stop(): CpuUse } {
  const before = snapshot();
  const startedAt = process.hrtime.bigint();
  return {
    stop() {
      const after = snapshot();
      const wallSeconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
      const spent = (pid: number, now: { seconds: number }): number =>
        now.seconds - (before.perPid.get(pid)?.seconds ?? 0);
      return {
        groups: groups.map((group) => {
          let seconds = 0;
          for (const [pid, now] of after.perPid) {
            if (group.pids?.includes(pid) === true || (group.comm !== undefined && now.comm === group.comm)) {
              seconds += spent(pid, now);
            }
          }
          return { name: group.name, seconds };
        }),
        machineSeconds: after.machineBusySeconds - before.machineBusySeconds,
        wallSeconds,
      };
    },
  };
}

/** Measurements of the same groups (in the same order), added up: one subject over its rounds. */
export function sumCpu(uses: readonly CpuUse[]): CpuUse {
  const total = (seconds: (use: CpuUse) => number): number => uses.reduce((sum, use) => sum + seconds(use), 0);
  return {
    groups: (uses[0]?.groups ?? []).map(({ name }, i) => ({ name, seconds: total((u) => u.groups[i]?.seconds ?? 0) })),
    machineSeconds: total((u) => u.machineSeconds),
    wallSeconds: total((u) => u.wallSeconds),
  };
}

/**
 * CPU milliseconds per unit of work (`units` of it done in `use`), of each group and of the
 * whole machine, and the rate at which the machine's cores saturate at that cost: an upper
 * bound on the rate the machine can carry the work at, whatever its latency.
 */
export function cpuPerUnit(
  use: CpuUse,
  units: number,
): { groups: { name: string; ms: number }[]; machineMs: number; saturationPerSecond: number } {
  const ms = (seconds: number): number => (seconds * 1000) / Math.max(1, units);
  const machineMs = ms(use.machineSeconds);
  return {
    groups: use.groups.map(({ name, seconds }) => ({ name, ms: ms(seconds) })),
    machineMs,
    saturationPerSecond: (availableParallelism() * 1000) / machineMs,
  };
}
