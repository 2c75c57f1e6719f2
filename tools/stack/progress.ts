/**
 * How the stack tool tells a person what it is doing: one line per step on stderr, so that
 * stdout carries only the services' JSON logs (`up` passes them through untouched).
 */
export interface Progress {
  /** Something is about to happen ("starting redis-server on 127.0.0.1:56379"). */
  step(message: string): void;
  /** Something is done or was found in place. */
  ok(message: string): void;
  warn(message: string): void;
}

export function createProgress(write: (line: string) => void = (line) => process.stderr.write(line)): Progress {
  const line =
    (mark: string) =>
    (message: string): void =>
      write(`[stack] ${mark} ${message}\n`);
  return { step: line('..'), ok: line('ok'), warn: line('!!') };
}

/**
 * A failure the person running the tool can act on: `message` says what went wrong and
 * `advice` what to do about it. main.ts prints both and exits non-zero without a stack trace.
 */
export class StackError extends Error {
  constructor(
    message: string,
    readonly advice: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'StackError';
  }
}
