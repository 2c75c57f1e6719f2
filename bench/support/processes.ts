import { performance } from 'node:perf_hooks';
import { startChild, startListening as startListeningChild, type ChildGroup } from '../../tools/process';

export { announceListening } from '../../tools/process';

/** A Node process started by the bench that announced the port it listens on. */
export interface ListeningProcess {
  readonly name: string;
  readonly pid: number;
  readonly port: number;
  /** host:port for gRPC clients. */
  readonly address: string;
  /** The last lines it wrote, for error messages. */
  tail(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  readonly name: string;
  /** Compiled entry point (a .js file). */
  readonly script: string;
  /** Its command-line arguments (a CLI's). */
  readonly args?: readonly string[];
  readonly env: Record<string, string>;
  readonly nodeArgs?: readonly string[];
  readonly timeoutMs?: number;
  /** The run's children: an interrupted bench stops them all (bench/main.ts). */
  readonly owner: ChildGroup;
}

const TAIL_LINES = 30;

const lastLines = (output: string): string => output.trimEnd().split('\n').slice(-TAIL_LINES).join('\n');

/**
 * Starts `node <script>` and resolves once it logs the JSON line `{"msg":"listening","port":N}`
 * (the services' start-up line; the floors and the bench's s3rver print the same). Its output
 * is read and dropped, keeping a tail for diagnosis.
 */
export async function startListening(options: StartOptions): Promise<ListeningProcess> {
  const { child, port } = await startListeningChild(
    options.name,
    {
      command: process.execPath,
      args: [...(options.nodeArgs ?? []), '--enable-source-maps', options.script],
      cwd: process.cwd(),
      env: { ...process.env, ...options.env },
    },
    options.timeoutMs ?? 60_000,
  );
  options.owner.adopt(child);
  return {
    name: options.name,
    pid: child.pid,
    port,
    address: `127.0.0.1:${port}`,
    tail: () => lastLines(child.output()),
    async stop(graceMs = 15_000) {
      await child.stop('SIGTERM', graceMs);
    },
  };
}

/** Runs `node <script>` to its end; resolves with the seconds it took, rejects unless it exits 0. */
export async function runToCompletion(options: StartOptions): Promise<{ seconds: number; tail: string }> {
  const started = performance.now();
  const child = options.owner.adopt(
    await startChild({
      command: process.execPath,
      args: [...(options.nodeArgs ?? []), '--enable-source-maps', options.script, ...(options.args ?? [])],
      cwd: process.cwd(),
      env: { ...process.env, ...options.env },
      output: 'capture',
    }),
  );
  const timer = setTimeout(() => void child.stop('SIGKILL', 0), options.timeoutMs ?? 600_000);
  const status = await child.exited;
  clearTimeout(timer);
  const tail = lastLines(child.output());
  if (status.code !== 0) {
    throw new Error(`${options.name} failed (code ${status.code}, signal ${status.signal})\n${tail}`);
  }
  return { seconds: (performance.now() - started) / 1000, tail };
}
