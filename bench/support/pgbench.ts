import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeExit, startChild, type Child, type ChildGroup } from '../../tools/process';

export interface PgbenchOptions {
  /** The database, as a libpq URI (pgbench takes it in place of a database name). */
  readonly databaseUrl: string;
  /** A custom script in pgbench's language: SQL ended by `;`, meta-commands such as `\set`. */
  readonly script: string;
  /** `-D name=value`: every client starts with its own copy. */
  readonly variables: Readonly<Record<string, string>>;
  readonly clients: number;
  /** `-T`: whole seconds, so at least 1. */
  readonly seconds: number;
  /** The run's children: an interrupted bench stops pgbench too. */
  readonly owner: ChildGroup;
}

export interface PgbenchResult {
  readonly transactions: number;
  /** Transactions per second, without the time spent connecting (pgbench's own figure). */
  readonly tps: number;
}

/**
 * How long pgbench may run past its -T before it counts as stuck: it checks -T only between
 * transactions, so one that never ends (a lock) would keep it running.
 */
const STALL_MS = 30_000;

/**
 * Runs pgbench with `script` (written to a temporary folder and removed after), no vacuum
 * (`-n`), prepared statements, `clients` sessions on up to 2 threads, for `seconds`. Resolves
 * with its figures, or undefined when pgbench is not installed (its line is then left out);
 * rejects when it fails, or is still running 30 s after its time (it is then killed).
 */
export async function runPgbench(options: PgbenchOptions): Promise<PgbenchResult | undefined> {
  const dir = await mkdtemp(join(tmpdir(), 'crucible-bench-pgbench-'));
  try {
    const file = join(dir, 'script.sql');
    await writeFile(file, options.script);
    const args = [
      '-n',
      ...['-c', String(options.clients), '-j', String(Math.min(2, options.clients))],
      ...['-T', String(options.seconds), '-M', 'prepared', '-f', file],
      ...Object.entries(options.variables).flatMap(([name, value]) => ['-D', `${name}=${value}`]),
      options.databaseUrl,
    ];
    let child: Child;
    try {
      child = options.owner.adopt(
        await startChild({
          command: 'pgbench',
          args,
          cwd: dir,
          env: { ...process.env, PGAPPNAME: 'crucible-bench-pgbench' },
          output: 'capture',
        }),
      );
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    let stalled = false;
    const timer = setTimeout(
      () => {
        stalled = true;
        void child.stop('SIGKILL', 0);
      },
      options.seconds * 1000 + STALL_MS,
    );
    const status = await child.exited;
    clearTimeout(timer);
    const output = child.output();
    const tps = /^tps = ([\d.]+) \(without initial connection time\)$/m.exec(output)?.[1];
    const transactions = /^number of transactions actually processed: (\d+)/m.exec(output)?.[1];
    if (stalled || status.code !== 0 || tps === undefined || transactions === undefined) {
      const why = stalled ? `was still running ${STALL_MS / 1000} s after its -T and was killed` : describeExit(status);
      throw new Error(`pgbench ${why}; its output:\n${output.trimEnd().split('\n').slice(-30).join('\n')}`);
    }
    return { transactions: Number(transactions), tps: Number(tps) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
