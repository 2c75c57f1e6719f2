import { setTimeout as sleep } from 'node:timers/promises';
import { describeExit, startChild, type ExitStatus } from '../process';
import type { Progress } from './progress';
import { StackError } from './progress';

/**
 * Something the tool started and must stop: a supervised child process (restarted when it
 * exits on its own: tools/process), a daemonised PostgreSQL, an in-process server.
 */
export interface Resource {
  readonly name: string;
  stop(): Promise<void>;
}

/**
 * Everything the tool started, so that it stops exactly that, newest first (services before
 * the servers they use), on success, on error and on Ctrl-C alike.
 */
export interface ResourceStack {
  add(resource: Resource): void;
  readonly names: readonly string[];
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
