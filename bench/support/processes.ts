import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';

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
  readonly env: Record<string, string>;
  readonly nodeArgs?: readonly string[];
  readonly timeoutMs?: number;
}

const TAIL_LINES = 30;

// Every child still running, so that an interrupted bench can stop them (see stopAllNow), and
// so that none outlives the bench, whatever ends it.
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** SIGTERM to every process the bench started and has not stopped (on Ctrl-C / SIGTERM). */
export function stopAllNow(): void {
  for (const child of running) child.kill('SIGTERM');
}

/**
 * Starts `node <script>` and resolves once it logs the JSON line `{"msg":"listening","port":N}`
 * (the services' start-up line; the floors and the bench's s3rver print the same). Its output
 * is read and dropped, keeping a tail for diagnosis.
 */
export async function startListening(options: StartOptions): Promise<ListeningProcess> {
  const child: ChildProcess = spawn(
    process.execPath,
    [...(options.nodeArgs ?? []), '--enable-source-maps', options.script],
    {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  running.add(child);
  const lines: string[] = [];
  const tail = (): string => lines.join('\n');
  const exited = once(child, 'exit').then(([code, signal]) => {
    running.delete(child);
    return { code: code as number | null, signal: signal as string | null };
  });
  const port = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new Error(`${options.name} did not report listening within ${options.timeoutMs ?? 60_000} ms\n${tail()}`),
        ),
      options.timeoutMs ?? 60_000,
    );
    const onLine = (line: string): void => {
      lines.push(line);
      if (lines.length > TAIL_LINES) lines.shift();
      if (!line.includes('"listening"')) return;
      try {
        const parsed = JSON.parse(line) as { msg?: unknown; port?: unknown };
        if (parsed.msg === 'listening' && typeof parsed.port === 'number') {
          clearTimeout(timer);
          resolve(parsed.port);
        }
      } catch {
        // not JSON: keep reading
      }
    };
    createInterface({ input: child.stdout! }).on('line', onLine);
    createInterface({ input: child.stderr! }).on('line', onLine);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${options.name} exited (code ${code}, signal ${signal}) before listening\n${tail()}`));
    });
  });
  const stop = async (graceMs = 15_000): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(killer);
  };
  try {
    const bound = await port;
    return { name: options.name, pid: child.pid!, port: bound, address: `127.0.0.1:${bound}`, tail, stop };
  } catch (err) {
    await stop(2000);
    throw err;
  }
}

/** Prints the line every bench-owned server prints once it is bound (see startListening). */
export function announceListening(port: number): void {
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port })}\n`);
}

/** Runs `node <script>` to its end; resolves with the seconds it took, rejects unless it exits 0. */
export async function runToCompletion(options: StartOptions): Promise<{ seconds: number; tail: string }> {
  const started = performance.now();
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), '--enable-source-maps', options.script], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const lines: string[] = [];
  const keep = (line: string): void => {
    lines.push(line);
    if (lines.length > TAIL_LINES) lines.shift();
  };
  createInterface({ input: child.stdout }).on('line', keep);
  createInterface({ input: child.stderr }).on('line', keep);
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 600_000);
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  clearTimeout(timer);
  running.delete(child);
  const tail = lines.join('\n');
  if (code !== 0) throw new Error(`${options.name} failed (code ${code}, signal ${signal})\n${tail}`);
  return { seconds: (performance.now() - started) / 1000, tail };
}
