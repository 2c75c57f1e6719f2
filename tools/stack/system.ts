import { accessSync, constants, existsSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import type { Progress } from './progress';
import { StackError } from './progress';
import { errorMessage, runChecked } from './processes';

/** The first executable called `name` on PATH, then in `extraDirs`; undefined if none. */
export function findExecutable(name: string, extraDirs: readonly string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== ''), ...extraDirs];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}

/** Debian keeps each PostgreSQL major's binaries in /usr/lib/postgresql/<major>/bin; newest first. */
export function postgresBinDirs(): string[] {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a))
    .map((v) => join(root, v, 'bin'));
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Installing packages is only attempted as root on Debian-like systems, never with sudo. */
export function canInstallPackages(): boolean {
  return isRoot() && existsSync('/etc/debian_version') && findExecutable('apt-get') !== undefined;
}

export async function aptInstall(packages: readonly string[], progress: Progress, cwd: string): Promise<void> {
  const advice = `install ${packages.join(' ')} yourself (apt-get install ${packages.join(' ')})`;
  progress.step(`installing ${packages.join(' ')} with apt-get (this may take a minute)`);
  await runChecked('apt-get', ['update', '-qq'], cwd, advice);
  await runChecked('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages], cwd, advice);
  progress.ok(`installed ${packages.join(' ')}`);
}

/** `command args` as `user` when we are root (via runuser), as ourselves otherwise. */
export function asUser(user: string, command: string, args: readonly string[]): [string, string[]] {
  return isRoot() ? ['runuser', ['-u', user, '--', command, ...args]] : [command, [...args]];
}

/** Only a server on this machine can be started here; a remote one must be started by its owner. */
function isLocalHost(host: string): boolean {
  return ['127.0.0.1', 'localhost', '::1', '[::1]', ''].includes(host);
}

/** True when nothing listens on host:port (we could bind it ourselves). */
export function isPortFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** What probing a server found. */
export type Probe =
  | { readonly kind: 'answers' }
  /** Connection refused: nothing listens, so a server could be started on that port. */
  | { readonly kind: 'nothing-listens' }
  /** Something listens but does not speak the protocol, or the host cannot be reached. */
  | { readonly kind: 'unreachable'; readonly error: unknown }
  /** The server answered with an error (authentication, unknown database ...). */
  | { readonly kind: 'refuses'; readonly error: unknown };

export interface ServerAddress {
  /** "PostgreSQL", "Redis" ... */
  readonly what: string;
  /** The environment variable holding the address. */
  readonly variable: string;
  readonly host: string;
  readonly port: string;
}

/**
 * Decides what to do about a server that did not answer: undefined means "start one here"
 * (nothing listens on a local port); otherwise the error to stop with, saying what to do.
 */
export function cannotStart(server: ServerAddress, probe: Exclude<Probe, { kind: 'answers' }>): StackError | undefined {
  const where = `${server.host}:${server.port}`;
  if (probe.kind === 'refuses') {
    return new StackError(
      `${server.what} at ${where} answers but refuses us: ${errorMessage(probe.error)}`,
      `fix the user, password or database in ${server.variable} (or unset it to use the local default)`,
    );
  }
  if (!isLocalHost(server.host)) {
    return new StackError(
      `${server.what} at ${where} (${server.variable}) does not answer, and it is not on this machine, so it cannot be started here`,
      `start ${server.what} at ${where}, or unset ${server.variable} to use a local one`,
    );
  }
  if (probe.kind === 'unreachable') {
    return new StackError(
      `something listens on ${where} but does not answer as ${server.what}: ${errorMessage(probe.error)}`,
      `find what uses the port (ss -ltnp 'sport = :${server.port}'), or set ${server.variable} to another port`,
    );
  }
  return undefined;
}

/** Whether a connection error means "nothing listens there" (as opposed to a silent or remote peer). */
export function isConnectionRefused(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if ((err as { code?: unknown }).code === 'ECONNREFUSED') return true;
  // Node's happy-eyeballs connect reports every address it tried.
  return err instanceof AggregateError && err.errors.some(isConnectionRefused);
}
