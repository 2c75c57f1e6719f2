import { spawn } from 'node:child_process';

/**
 * The one way this repository's tools, tests and benchmarks run a child process: spawn it,
 * watch its output for the services' ready line, stop it (a signal, then SIGKILL after a
 * grace period). Whoever starts a child owns its stop: nothing here keeps a list of children.
 */

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export function describeExit(status: ExitStatus): string {
  if (status.signal !== null) return `was killed by ${status.signal}`;
  return status.code === null ? 'exited' : `exited with code ${status.code}`;
}

export interface Child {
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  /** The last `captureLimit` characters of output, unless started with `output: 'inherit'`. */
  output(): string;
  /** Sends `signal`, sends SIGKILL if the process is still there after `graceMs`, resolves once it exited. */
  stop(signal: NodeJS.Signals, graceMs: number): Promise<ExitStatus>;
}

export interface ChildOptions {
  readonly command: string;
  readonly args: readonly string[];
  readonly cwd: string;
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Own process group: a terminal's Ctrl-C then reaches only the parent, which stops children
   * in order (services first, then the servers they use) instead of all at once.
   */
  readonly detached?: boolean;
  /**
   * `inherit` passes output through untouched; `capture` keeps its tail (error messages);
   * `forward` does both, line by line, so that a parent can watch a child whose logs it shows.
   */
  readonly output: 'inherit' | 'capture' | 'forward';
  /** Every complete line the child writes (not with `inherit`). */
  readonly onLine?: (line: string) => void;
  /** Characters of output kept for `output()` (default 64 Ki: the tail, for error messages). */
  readonly captureLimit?: number;
}

const CAPTURE_LIMIT = 64 * 1024;

/** Spawns a process; rejects (e.g. binary not found) instead of emitting 'error' later. */
export function startChild(options: ChildOptions): Promise<Child> {
  const child = spawn(options.command, options.args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    detached: options.detached ?? false,
    stdio: options.output === 'inherit' ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'],
  });
  let captured = '';
  const captureLimit = options.captureLimit ?? CAPTURE_LIMIT;
  const watch = (stream: NodeJS.ReadableStream | null, forwardTo: NodeJS.WritableStream): void => {
    if (stream === null) return;
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      captured += chunk;
      if (captured.length > captureLimit) captured = captured.slice(-captureLimit);
      if (options.output === 'forward') forwardTo.write(chunk);
      if (options.onLine === undefined) return;
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) options.onLine(line);
    });
  };
  watch(child.stdout, process.stdout);
  watch(child.stderr, process.stderr);
  const exited = new Promise<ExitStatus>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('spawn', () => {
      child.off('error', reject);
      // A later error (a failed kill) must not crash the parent; the exit status tells the story.
      child.on('error', () => undefined);
      resolve({
        pid: child.pid ?? -1,
        exited,
        output: () => captured,
        async stop(signal, graceMs) {
          if (child.exitCode !== null || child.signalCode !== null) return exited;
          child.kill(signal);
          const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
          const status = await exited;
          clearTimeout(timer);
          return status;
        },
      });
    });
  });
}

/** The port of the services' ready line, `{"msg":"listening","port":N}` (floors print it too). */
function listeningPort(line: string): number | undefined {
  if (!line.startsWith('{') || !line.includes('"listening"')) return undefined;
  try {
    const record = JSON.parse(line) as { msg?: unknown; port?: unknown };
    return record.msg === 'listening' && typeof record.port === 'number' ? record.port : undefined;
  } catch {
    return undefined;
  }
}

/** Prints the ready line (for servers of our own that are not services: floors, s3rver). */
export function announceListening(port: number): void {
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port })}\n`);
}

export interface ListeningChild {
  readonly child: Child;
  readonly port: number;
}

/**
 * Starts a child and resolves once it printed its ready line. If it exits first, or stays
 * silent for `timeoutMs`, it is killed and the promise rejects with `name` and its output.
 */
export async function startListening(
  name: string,
  options: Omit<ChildOptions, 'onLine' | 'output'> & { readonly output?: 'capture' | 'forward' },
  timeoutMs: number,
): Promise<ListeningChild> {
  let announce: ((port: number) => void) | undefined;
  const announced = new Promise<number>((resolve) => (announce = resolve));
  const child = await startChild({
    ...options,
    output: options.output ?? 'capture',
    onLine: (line) => {
      const port = listeningPort(line);
      if (port !== undefined) announce?.(port);
    },
  });
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    announced.then((port) => ({ port })),
    child.exited.then((status) => ({ failed: `${describeExit(status)} before listening` })),
    new Promise<{ failed: string }>((resolve) => {
      timer = setTimeout(() => resolve({ failed: `did not log "listening" within ${timeoutMs / 1000}s` }), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if ('port' in outcome) return { child, port: outcome.port };
  await child.stop('SIGKILL', 0);
  throw new Error(`${name} ${outcome.failed}; its output:\n${child.output() || '(none)'}`);
}

/**
 * The children one owner started and has not stopped yet, for an owner that must stop them
 * all at once (a benchmark run interrupted half-way). Exited children leave it by themselves.
 */
export interface ChildGroup {
  adopt(child: Child): Child;
  stopAll(signal: NodeJS.Signals, graceMs: number): Promise<void>;
}

export function createChildGroup(): ChildGroup {
  const children = new Set<Child>();
  return {
    adopt(child) {
      children.add(child);
      void child.exited.then(() => children.delete(child));
      return child;
    },
    async stopAll(signal, graceMs) {
      await Promise.all([...children].map((child) => child.stop(signal, graceMs)));
    },
  };
}
