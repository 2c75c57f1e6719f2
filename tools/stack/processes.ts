import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Progress } from './progress';
import { StackError } from './progress';

/** Something the tool started and must stop: a child process, an in-process server. */
export interface Resource {
  readonly name: string;
  /**
   * Settles, with a sentence saying what happened, if the resource goes away on its own (a
   * child process exiting). Absent when that cannot be watched (a daemonised PostgreSQL).
   */
  readonly ended?: Promise<string>;
  stop(): Promise<void>;
}

/**
 * Everything the tool started, so that it stops exactly that, newest first (services before
 * the servers they use), on success, on error and on Ctrl-C alike.
 */
export interface ResourceStack {
  add(resource: Resource): void;
  readonly names: readonly string[];
  /** Resolves when the first watchable resource ends on its own; never if none can. */
  firstEnded(): Promise<string>;
  /** Stops every resource in reverse order; a failure is reported and the rest still stopped. */
  stopAll(progress: Progress): Promise<void>;
}

export function createResourceStack(): ResourceStack {
  const resources: Resource[] = [];
  return {
    add: (resource) => void resources.push(resource),
    get names() {
      return resources.map((r) => r.name);
    },
    firstEnded: () =>
      Promise.race(
        resources.flatMap((r) => (r.ended === undefined ? [] : [r.ended.then((what) => `${r.name} ${what}`)])),
      ),
    async stopAll(progress) {
      for (let resource = resources.pop(); resource !== undefined; resource = resources.pop()) {
        progress.step(`stopping ${resource.name}`);
        try {
          await resource.stop();
          progress.ok(`stopped ${resource.name}`);
        } catch (err) {
          progress.warn(`could not stop ${resource.name}: ${errorMessage(err)}`);
        }
      }
    },
  };
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export function describeExit(status: ExitStatus): string {
  return status.signal !== null ? `was killed by ${status.signal}` : `exited with code ${String(status.code)}`;
}

export interface Child {
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  /** The last 64 KiB of output when started with `output: 'capture'`, else ''. */
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
   * Own process group: a terminal's Ctrl-C then reaches only the tool, which stops children
   * in order (services first, then the servers they use) instead of all at once.
   */
  readonly detached: boolean;
  /** `inherit` passes output through; `capture` keeps its tail for error messages. */
  readonly output: 'inherit' | 'capture';
}

const CAPTURE_LIMIT = 64 * 1024;

/** Spawns a process; rejects (e.g. binary not found) instead of emitting 'error' later. */
export function startChild(options: ChildOptions): Promise<Child> {
  const child = spawn(options.command, options.args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    detached: options.detached,
    stdio: options.output === 'inherit' ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'],
  });
  let captured = '';
  const capture = (chunk: Buffer): void => {
    captured = (captured + chunk.toString('utf8')).slice(-CAPTURE_LIMIT);
  };
  child.stdout?.on('data', capture);
  child.stderr?.on('data', capture);
  const exited = new Promise<ExitStatus>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('spawn', () => {
      child.off('error', reject);
      // A later error (a failed kill) must not crash the tool; the exit status tells the story.
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

export interface CommandResult {
  readonly status: ExitStatus;
  readonly output: string;
}

/** Runs a one-shot command (initdb, pg_ctl, apt-get) to completion, collecting its output. */
export async function runCommand(command: string, args: readonly string[], cwd: string): Promise<CommandResult> {
  const child = await startChild({ command, args, cwd, detached: false, output: 'capture' });
  const status = await child.exited;
  return { status, output: child.output() };
}

/** Like runCommand, but a non-zero exit is a StackError carrying the command's output. */
export async function runChecked(
  command: string,
  args: readonly string[],
  cwd: string,
  advice: string,
): Promise<string> {
  const result = await runCommand(command, args, cwd);
  if (result.status.code !== 0) {
    throw new StackError(
      `${[command, ...args].join(' ')} ${describeExit(result.status)}:\n${indent(tail(result.output))}`,
      advice,
    );
  }
  return result.output;
}

export interface WaitOptions {
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
  /** What the person should do when the wait fails. */
  readonly advice: string;
  /** Settles if waiting is pointless (the server process exited); its text becomes the error. */
  readonly giveUp?: Promise<string>;
}

/**
 * Waits until `check` answers true: a freshly started server announces readiness only by
 * answering, so this asks again every 100 ms (bounded by `timeoutMs`, Ctrl-C and `giveUp`).
 */
export async function waitUntil(what: string, check: () => Promise<boolean>, options: WaitOptions): Promise<void> {
  let gaveUp: string | undefined;
  void options.giveUp?.then((reason) => (gaveUp = reason));
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    options.signal.throwIfAborted();
    if (gaveUp !== undefined) throw new StackError(`${what}: ${gaveUp}`, options.advice);
    if (await check()) return;
    if (Date.now() > deadline) {
      throw new StackError(`${what}: no answer after ${options.timeoutMs / 1000}s`, options.advice);
    }
    await sleep(100);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The last lines of a command's output, for error messages. */
export function tail(output: string, lines = 20): string {
  return output.trimEnd().split('\n').slice(-lines).join('\n');
}

export function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}
