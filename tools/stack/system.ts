import { accessSync, constants, existsSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import type { Progress } from './progress';
import { StackError } from './progress';
import { runChecked } from './processes';

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
export function isLocalHost(host: string): boolean {
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

/** Throws the usual "cannot start it here" error for a server that does not answer. */
export function remoteServerDown(what: string, variable: string, where: string): StackError {
  return new StackError(
    `${what} at ${where} (${variable}) does not answer, and it is not on this machine, so it cannot be started here`,
    `start ${what} at ${where}, or unset ${variable} to use a local one`,
  );
}
