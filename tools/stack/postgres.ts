import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { Client } from 'pg';
import { ensureServiceLogins, isPostgresUnavailable, runMigrations, SERVICE_LOGINS } from '../../shared/postgres';
import type { StackContext } from './context';
import type { Progress } from './progress';
import { StackError } from './progress';
import { supervise, type Child, type ExitStatus } from '../process';
import { errorMessage, runChecked, runCommand } from './processes';
import {
  aptInstall,
  asUser,
  cannotStart,
  canInstallPackages,
  findExecutable,
  isConnectionRefused,
  isRoot,
  postgresBinDirs,
  type Probe,
} from './system';

/** initdb refuses to run as root, so as root the cluster belongs to this OS user (Debian's). */
const OS_USER = 'postgres';

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** Where DATABASE_URL points, for messages (never the password). */
function describe(url: string): string {
  const parsed = new URL(url);
  return `${parsed.hostname}:${parsed.port || '5432'}`;
}

async function probe(url: string): Promise<Probe> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return { kind: 'answers' };
  } catch (error) {
    if (isConnectionRefused(error)) return { kind: 'nothing-listens' };
    // A SQLSTATE means PostgreSQL itself answered (57P03: it is still starting up).
    const code = (error as { code?: unknown }).code;
    const answered = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && code !== '57P03';
    return { kind: answered ? 'refuses' : 'unreachable', error };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Makes sure the PostgreSQL server of `databaseUrl` answers: uses it when it does, otherwise
 * (only if it is meant to run on this machine) starts one with its data in `.data/postgres`.
 */
export async function ensurePostgres(databaseUrl: string, ctx: StackContext): Promise<void> {
  const where = describe(databaseUrl);
  // The server's own maintenance database: the configured one may not exist yet.
  const adminUrl = withDatabase(databaseUrl, 'postgres');
  const url = new URL(databaseUrl);
  const found = await probe(adminUrl);
  if (found.kind === 'answers') {
    ctx.progress.ok(`postgres: ${where} answers; using it`);
    return;
  }
  const port = url.port || '5432';
  const refusal = cannotStart({ what: 'PostgreSQL', variable: 'DATABASE_URL', host: url.hostname, port }, found);
  if (refusal !== undefined) throw refusal;

  ctx.progress.step(`postgres: nothing answers on ${where}; starting a local server`);
  const { initdb, pgCtl } = await findOrInstallBinaries(ctx);
  const dir = await clusterDirectory(ctx);
  const shown = relative(ctx.projectRoot, dir).startsWith('..') ? dir : relative(ctx.projectRoot, dir);
  const superuser = decodeURIComponent(url.username) || OS_USER;
  const advice = `see ${shown}/server.log (delete ${shown} to start afresh)`;

  if (!existsSync(join(dir, 'PG_VERSION'))) {
    ctx.progress.step(
      `postgres: creating a cluster in ${shown} (superuser "${superuser}", trust auth on ${url.hostname})`,
    );
    // Only the cluster itself is private; the postgres OS user must get through its parent.
    mkdirSync(dirname(dir), { recursive: true, mode: 0o755 });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // Commands run as the postgres OS user start in '/': it may not be allowed into the checkout.
    if (isRoot()) await runChecked('chown', ['-R', `${OS_USER}:`, dir], '/', advice);
    const args = ['-D', dir, '-U', superuser, '--auth=trust', '--encoding=UTF8', '--locale=C'];
    await runChecked(...asUser(OS_USER, initdb, args), '/', advice);
  }

  const listen = url.hostname.replace(/^\[(.*)\]$/, '$1');
  // No Unix socket: everything connects over TCP, and socket paths have a length limit.
  const serverOptions = `-p ${port} -c listen_addresses=${listen} -c unix_socket_directories=''`;
  const log = join(dir, 'server.log');
  const pgCtlAs = (args: readonly string[]): [string, string[]] => asUser(OS_USER, pgCtl, ['-D', dir, ...args]);
  const startServer = async (): Promise<Child> => {
    await runChecked(
      ...pgCtlAs(['start', '-w', '-t', '60', '-l', log, '-o', serverOptions]),
      '/',
      `${advice}; if a server from an earlier run still uses ${shown}, stop it: ${pgCtlAs(['stop']).flat().join(' ')}`,
    );
    return watchDaemon(join(dir, 'postmaster.pid'), async () => {
      await runChecked(...pgCtlAs(['stop', '-w', '-t', '60', '-m', 'fast']), '/', advice);
    });
  };
  // pg_ctl daemonises the server; its supervisor watches the postmaster's pid instead of a
  // child, and restarts it on the same data directory.
  const server = await supervise({
    name: `postgres on ${where}`,
    start: startServer,
    log: (line) => ctx.progress.warn(`postgres: ${line}`),
  });
  ctx.resources.add({ name: `postgres on ${where}`, stop: () => server.stop('SIGTERM', 60_000) });
  const started = await probe(adminUrl);
  if (started.kind !== 'answers') {
    const reason = 'error' in started ? errorMessage(started.error) : 'connection refused';
    throw new StackError(`postgres: started on ${where} but does not answer: ${reason}`, advice);
  }
  ctx.progress.ok(`postgres: started on ${where} (data in ${shown})`);
}

/**
 * The cluster lives in .data/postgres. As root it belongs to the postgres OS user, which must
 * be able to walk there; a checkout under a private directory (/root, `mktemp -d`) does not
 * allow that, so the cluster then goes to /var/tmp, under a name derived from the checkout.
 */
async function clusterDirectory(ctx: StackContext): Promise<string> {
  mkdirSync(ctx.dataDir, { recursive: true });
  const local = join(ctx.dataDir, 'postgres');
  if (!isRoot()) return local;
  chmodSync(ctx.dataDir, 0o755);
  const reachable = await runCommand('runuser', ['-u', OS_USER, '--', 'test', '-x', ctx.dataDir], '/');
  if (reachable.status.code === 0) return local;
  const checkout = createHash('sha256').update(ctx.projectRoot).digest('hex').slice(0, 12);
  const outside = join('/var/tmp', `crucible-storage-${checkout}`, 'postgres');
  ctx.progress.warn(
    `postgres: the "${OS_USER}" OS user cannot enter ${ctx.dataDir} (a parent directory is private); ` +
      `the cluster goes to ${outside} instead`,
  );
  return outside;
}

async function findOrInstallBinaries(ctx: StackContext): Promise<{ initdb: string; pgCtl: string }> {
  const find = (): { initdb: string; pgCtl: string } | undefined => {
    const dirs = postgresBinDirs();
    const initdb = findExecutable('initdb', dirs);
    const pgCtl = findExecutable('pg_ctl', dirs);
    return initdb !== undefined && pgCtl !== undefined ? { initdb, pgCtl } : undefined;
  };
  const found = find();
  if (found !== undefined) return found;
  const advice = 'install PostgreSQL (e.g. apt-get install postgresql), or point DATABASE_URL at a running server';
  if (!canInstallPackages()) {
    throw new StackError('postgres: initdb/pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin', advice);
  }
  await aptInstall(['postgresql'], ctx.progress, ctx.projectRoot);
  const installed = find();
  if (installed === undefined)
    throw new StackError('postgres: installed postgresql but found no initdb/pg_ctl', advice);
  return installed;
}

function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Creates the database named in `databaseUrl` on its server unless it exists. */
export async function ensureDatabase(databaseUrl: string, progress: Progress): Promise<void> {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.slice(1));
  if (name === '') return;
  const admin = new Client({ connectionString: withDatabase(databaseUrl, 'postgres'), connectionTimeoutMillis: 3000 });
  admin.on('error', () => undefined);
  try {
    await admin.connect();
    const existing = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (existing.rowCount !== 0) {
      progress.ok(`postgres: database "${name}" exists`);
      return;
    }
    await admin.query(`CREATE DATABASE ${quoteIdentifier(name)}`);
    progress.ok(`postgres: created database "${name}"`);
  } catch (err) {
    // 42P04 duplicate_database: someone else created it meanwhile, which is what we wanted.
    if ((err as { code?: unknown }).code === '42P04') return;
    if (isPostgresUnavailable(err)) {
      throw new StackError(
        `postgres: nothing answers on ${describe(databaseUrl)}: ${errorMessage(err)}`,
        'start the dependencies first (npm run deps, or make up), or fix DATABASE_URL',
      );
    }
    throw new StackError(
      `postgres: could not create database "${name}" on ${describe(databaseUrl)}: ${errorMessage(err)}`,
      'create it yourself (createdb) or give the DATABASE_URL user the CREATEDB privilege',
    );
  } finally {
    await admin.end().catch(() => undefined);
  }
}

/** Applies every pending migration to `databaseUrl`'s database. */
export async function applyMigrations(databaseUrl: string, progress: Progress): Promise<void> {
  try {
    const applied = await runMigrations({ url: databaseUrl, applicationName: 'crucible-stack' });
    progress.ok(
      applied.length === 0
        ? 'postgres: schema is up to date'
        : `postgres: applied ${applied.length} migration(s): ${applied.join(', ')}`,
    );
  } catch (err) {
    throw new StackError(
      `postgres: migrations failed on ${describe(databaseUrl)}: ${errorMessage(err)}`,
      'fix the migration or the database; nothing after the failed migration was applied',
      { cause: err },
    );
  }
}

/** How often a daemon's pid is checked: a crash is noticed within this. */
const DAEMON_POLL_MS = 1000;

/**
 * A daemonised server seen as a child: `exited` settles once the pid its pid file names is
 * gone (or the file is), and `stop` runs the server's own stop command.
 */
function watchDaemon(pidFile: string, stopServer: () => Promise<void>): Child {
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  let resolveExit: (status: ExitStatus) => void = () => undefined;
  const exited = new Promise<ExitStatus>((resolve) => (resolveExit = resolve));
  const timer = setInterval(() => {
    if (!isAlive(pid)) {
      clearInterval(timer);
      resolveExit({ code: null, signal: null });
    }
  }, DAEMON_POLL_MS);
  return {
    pid,
    exited,
    output: () => '',
    async stop() {
      await stopServer();
      clearInterval(timer);
      resolveExit({ code: 0, signal: null });
      return exited;
    },
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: alive, but another user's (not as root).
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Creates the services' logins of least privilege (`crucible_command`, `crucible_query`; their
 * roles come with the migrations), with DATABASE_URL's password if it has one, so that they
 * authenticate as it does.
 */
export async function ensureLogins(databaseUrl: string, progress: Progress): Promise<void> {
  const admin = new Client({ connectionString: databaseUrl, connectionTimeoutMillis: 3000 });
  admin.on('error', () => undefined);
  try {
    await admin.connect();
    await ensureServiceLogins(admin, databaseUrl);
    progress.ok(`postgres: logins ${SERVICE_LOGINS.map((l) => `${l.login} (${l.memberOf})`).join(', ')} ready`);
  } catch (err) {
    throw new StackError(
      `postgres: could not create the services' logins on ${describe(databaseUrl)}: ${errorMessage(err)}`,
      "give the DATABASE_URL user CREATEROLE, or create them yourself (docs/security.md) and set each service's URL",
      { cause: err },
    );
  } finally {
    await admin.end().catch(() => undefined);
  }
}
