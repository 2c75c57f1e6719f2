import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import Redis from 'ioredis';
import type { HostPort } from '../../shared/config';
import {
  asRedisUser,
  createRedisClient,
  enableKeyspaceEvents,
  onEveryNode,
  KEYSPACE_EVENT_FLAGS,
  setRedisUsers,
  type RedisUser,
} from '../../shared/redis';
import type { StackContext } from './context';
import type { Progress } from './progress';
import { StackError } from './progress';
import { describeExit, startChild, supervise, type Child, type RestartPolicy } from '../process';
import { indent, tail, waitUntil } from './processes';
import { aptInstall, cannotStart, canInstallPackages, findExecutable, isConnectionRefused, type Probe } from './system';

/**
 * A connection for one question to a server that may not be there: not yet connected, and
 * failing at once (no retries, no reconnects, no queue) instead of waiting for it.
 */
export function probeConnection(url: string): Redis {
  return new Redis(url, {
    lazyConnect: true,
    connectTimeout: 2000,
    // Something that accepts connections but never answers is not a usable Redis.
    commandTimeout: 2000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
}

/** Whether one Redis answers at `url` (and if not, why). */
export async function probeRedis(url: string): Promise<Probe> {
  const client = probeConnection(url);
  // ioredis rejects connect() with a bare "Connection is closed."; the cause comes as an event.
  let connectionError: unknown;
  client.on('error', (err: unknown) => (connectionError ??= err));
  try {
    await client.connect();
    await client.ping();
    return { kind: 'answers' };
  } catch (error) {
    if (isConnectionRefused(connectionError)) return { kind: 'nothing-listens' };
    // A ReplyError is Redis itself answering (NOAUTH, WRONGPASS ...).
    const answered = error instanceof Error && error.name === 'ReplyError';
    return { kind: answered ? 'refuses' : 'unreachable', error: connectionError ?? error };
  } finally {
    client.disconnect();
  }
}

function describe(url: string): string {
  const parsed = new URL(url);
  return `${parsed.hostname}:${parsed.port || '6379'}`;
}

/**
 * Makes sure the Redis of `redisUrl` answers: uses it when it does, otherwise (only if it is
 * meant to run on this machine) runs `redis-server` as a child, without persistence: the
 * read models it holds are rebuilt from PostgreSQL's event log.
 */
export async function ensureRedis(
  redisUrl: string,
  ctx: StackContext,
  users: readonly RedisUser[] = [],
): Promise<void> {
  const where = describe(redisUrl);
  const url = new URL(redisUrl);
  const found = await probeRedis(redisUrl);
  if (found.kind === 'answers') {
    ctx.progress.ok(`redis: ${where} answers; using it`);
    return;
  }
  const refusal = cannotStart(
    { what: 'Redis', variable: 'REDIS_URL', host: url.hostname, port: url.port || '6379' },
    found,
  );
  if (refusal !== undefined) throw refusal;

  ctx.progress.step(`redis: nothing answers on ${where}; starting redis-server`);
  const shown = await startRedisServer({
    binary: await findRedisServer(ctx),
    url: redisUrl,
    dir: join(ctx.dataDir, 'redis'),
    users,
    name: `redis-server on ${where}`,
    log: (line) => ctx.progress.warn(`redis: ${line}`),
    ctx,
  });
  ctx.progress.ok(`redis: started redis-server on ${where} (log in ${shown})`);
}

export interface RedisServerOptions {
  readonly binary: string;
  /** Where it listens (host, port) and the default user's password. */
  readonly url: string;
  /** Its directory: log, ACL file and whatever it writes (nodes.conf of a cluster node). */
  readonly dir: string;
  /** ACL users besides the default one. */
  readonly users: readonly RedisUser[];
  /** Arguments after the common ones (a cluster node's). */
  readonly extraArgs?: readonly string[];
  readonly name: string;
  readonly policy?: RestartPolicy;
  readonly log: (line: string) => void;
  readonly ctx: StackContext;
}

/**
 * Runs `redis-server` as a supervised child without persistence (the read models it holds are
 * rebuilt from PostgreSQL's event log) and waits until it answers; the stack stops it.
 * Returns where its log is, relative to the checkout.
 */
export async function startRedisServer(options: RedisServerOptions): Promise<string> {
  const { binary, dir, ctx } = options;
  const url = new URL(options.url);
  mkdirSync(dir, { recursive: true });
  const logFile = join(dir, 'redis.log');
  // The services' users and the keyspace events the query side follows come back with every
  // restart (it keeps no data): in a file only we can read, so no password shows in `ps`.
  const aclFile = join(dir, 'users.acl');
  const password = decodeURIComponent(url.password);
  const userLines = [
    `user default on ${password === '' ? 'nopass' : `>${password}`} ~* &* +@all`,
    ...options.users.map((u) => ['user', u.name, 'on', `>${u.password}`, 'resetchannels', ...u.rules].join(' ')),
  ];
  writeFileSync(aclFile, `${userLines.join('\n')}\n`, { mode: 0o600 });
  // prettier-ignore
  const args = [
    '--port', url.port || '6379',
    '--bind', url.hostname.replace(/^\[(.*)\]$/, '$1'),
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
    '--logfile', logFile,
    '--aclfile', aclFile,
    '--notify-keyspace-events', KEYSPACE_EVENT_FLAGS.join(''),
    ...(options.extraArgs ?? []),
  ];
  const shown = relative(ctx.projectRoot, logFile);
  const start = async (): Promise<Child> => {
    const child = await startChild({ command: binary, args, cwd: ctx.projectRoot, detached: true, output: 'capture' });
    try {
      await waitUntil(`redis: ${options.name}`, async () => (await probeRedis(options.url)).kind === 'answers', {
        timeoutMs: 15_000,
        signal: ctx.signal,
        giveUp: child.exited.then(describeExit),
        advice: `see ${shown}`,
      });
    } catch (err) {
      await child.stop('SIGKILL', 0);
      if (!(err instanceof StackError)) throw err;
      const log = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
      throw new StackError(`${err.message}\n${indent(tail(`${child.output()}${log}`))}`, err.advice);
    }
    return child;
  };
  // Restarted empty when it dies (it keeps nothing on disk): the query side rebuilds from the log.
  const server = await supervise({
    name: options.name,
    start,
    log: options.log,
    ...(options.policy !== undefined ? { policy: options.policy } : {}),
  });
  ctx.resources.add({ name: options.name, stop: () => server.stop('SIGTERM', 10_000) });
  return shown;
}

/** redis-server: on PATH or in Debian's places, else installed with apt-get (as root only). */
export async function findRedisServer(ctx: StackContext): Promise<string> {
  const dirs = ['/usr/bin', '/usr/sbin', '/usr/local/bin'];
  const found = findExecutable('redis-server', dirs);
  if (found !== undefined) return found;
  const advice = 'install Redis (e.g. apt-get install redis-server), or point REDIS_URL at a running server';
  if (!canInstallPackages()) throw new StackError('redis: redis-server not found on PATH', advice);
  await aptInstall(['redis-server'], ctx.progress, ctx.projectRoot);
  const installed = findExecutable('redis-server', dirs);
  if (installed === undefined) throw new StackError('redis: installed redis-server but cannot find it', advice);
  return installed;
}

/**
 * The Redis URL of each service as its ACL user of least privilege (`users`, from
 * serviceRedisUsers), set up on a Redis we did not start (one we start has them from its ACL
 * file, restarts included), with the keyspace events the query side follows switched on (its
 * user may not); on a cluster, on every node (ACL users and CONFIG are each node's own, replicas
 * included, so that a failover keeps them). Without users (a REDIS_URL that names one: the
 * operator's choice), or when this Redis does not let us set them up, both services keep
 * REDIS_URL as given.
 */
export async function serviceRedisUrls(
  redisUrl: string,
  clusterNodes: readonly HostPort[],
  users: { readonly command: RedisUser; readonly query: RedisUser } | undefined,
  progress: Progress,
): Promise<{ readonly command: string; readonly query: string }> {
  if (users === undefined) return { command: redisUrl, query: redisUrl };
  const admin = createRedisClient({ url: redisUrl, clusterNodes }, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await admin.connect();
    await onEveryNode(admin, async (node) => {
      await setRedisUsers(node, [users.command, users.query]);
      await enableKeyspaceEvents(node);
    });
    progress.ok(`redis: ACL users ${users.command.name}, ${users.query.name} set up (docs/security.md)`);
    return { command: asRedisUser(redisUrl, users.command), query: asRedisUser(redisUrl, users.query) };
  } catch (err) {
    progress.warn(
      `redis: could not set up the services' ACL users (${(err as Error).message}); both use ${describe(redisUrl)} as given`,
    );
    return { command: redisUrl, query: redisUrl };
  } finally {
    admin.disconnect();
  }
}
