import type { Logger } from '../logging';
import { ConfigError } from '../config';

/** Something holding a socket or a timer that must be released on shutdown. */
export interface Closeable {
  readonly name: string;
  close(): Promise<void>;
}

/**
 * Runs `fn` with retries until it succeeds or `attempts` are used, waiting `delayMs` between
 * attempts. Used at start-up, where a dependency may still be coming up.
 */
export async function retryAtStartup<T>(
  what: string,
  fn: () => Promise<T>,
  logger: Logger,
  attempts = 30,
  delayMs = 1000,
): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= attempts) throw err;
      logger.warn(`${what} failed; retrying`, {
        attempt,
        attempts,
        err: err instanceof Error ? err.message : String(err),
      });
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

/**
 * Closes resources in reverse order of creation, logging (not throwing) each failure, so that
 * one stuck dependency does not keep the others open.
 */
export async function closeAll(resources: readonly Closeable[], logger: Logger): Promise<void> {
  for (const resource of [...resources].reverse()) {
    try {
      await resource.close();
    } catch (err) {
      logger.warn('close failed', { resource: resource.name, err });
    }
  }
}

/** Calls `onSignal` once on the first SIGTERM or SIGINT. */
export function onShutdownSignal(onSignal: (signal: NodeJS.Signals) => void): void {
  let received = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (received) return;
    received = true;
    onSignal(signal);
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

/**
 * Runs `reload` on every SIGHUP (re-reading keys and identity files): a failure is logged and
 * what was loaded before stays in force.
 */
export function onReloadSignal(reload: () => Promise<void>, logger: Logger): void {
  process.on('SIGHUP', () => {
    reload().then(
      () => logger.info('reloaded keys and identities (SIGHUP)'),
      (err: unknown) => logger.error('reload failed; the keys and identities loaded before stay in force', { err }),
    );
  });
}

/**
 * The one failure handler of every entry point's main() (both services and the CLIs): a
 * configuration problem prints what to fix and exits 2; anything else is logged and exits 1.
 */
export function exitOnFailure(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\nRun with --help to see every setting.\n`);
    process.exit(2);
  }
  process.stderr.write(
    `${JSON.stringify({ time: new Date().toISOString(), level: 'error', msg: 'fatal', err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) })}\n`,
  );
  process.exit(1);
}

/** Text for `--help`: what the program does, then every setting (shared/config's settingsHelp). */
export function helpText(summary: string, settings: string): string {
  return `${summary}\n\nConfiguration (environment variables):\n${settings}\n`;
}
