import { createLogger, type LogFields, type Logger } from '../../shared/logging';

/** A logger whose lines a test reads back, and awaits: no polling for what a service says it did. */
export interface LogCapture {
  readonly logger: Logger;
  /** Every line so far, parsed. */
  readonly lines: readonly LogFields[];
  /** Resolves at the next line whose message matches `pattern`. */
  next(pattern: RegExp): Promise<void>;
}

export function captureLog(): LogCapture {
  const lines: LogFields[] = [];
  let waiting: { pattern: RegExp; resolve: () => void }[] = [];
  const logger = createLogger('info', {}, (line) => {
    const fields = JSON.parse(line) as LogFields;
    lines.push(fields);
    const matched = waiting.filter((w) => w.pattern.test(String(fields.msg)));
    waiting = waiting.filter((w) => !matched.includes(w));
    for (const w of matched) w.resolve();
  });
  return {
    logger,
    lines,
    next: (pattern) => new Promise((resolve) => waiting.push({ pattern, resolve })),
  };
}
