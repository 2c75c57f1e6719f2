import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import Redis from 'ioredis';
import type { StackContext } from './context';
import { StackError } from './progress';
import { describeExit, startChild, supervise, type Child } from '../process';
import { indent, tail, waitUntil } from './processes';
import { aptInstall, cannotStart, canInstallPackages, findExecutable, isConnectionRefused, type Probe } from './system';

async function probe(url: string): Promise<Probe> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 2000,
    // Something that accepts connections but never answers is not a usable Redis.
    commandTimeout: 2000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
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
export async function ensureRedis(redisUrl: string, ctx: StackContext): Promise<void> {
  const where = describe(redisUrl);
  const url = new URL(redisUrl);
  const found = await probe(redisUrl);
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
  const binary = await findOrInstall(ctx);
  const dir = join(ctx.dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const logFile = join(dir, 'redis.log');
  // prettier-ignore
  const args = [
    '--port', url.port || '6379',
    '--bind', url.hostname.replace(/^\[(.*)\]$/, '$1'),
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
    '--logfile', logFile,
    ...(url.password !== '' ? ['--requirepass', decodeURIComponent(url.password)] : []),
  ];
  const shown = relative(ctx.projectRoot, logFile);
  const name = `redis-server on ${where}`;
  const start = async (): Promise<Child> => {
    const child = await startChild({ command: binary, args, cwd: ctx.projectRoot, detached: true, output: 'capture' });
    try {
      await waitUntil(`redis: ${name}`, async () => (await probe(redisUrl)).kind === 'answers', {
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
  const server = await supervise({ name, start, log: (line) => ctx.progress.warn(`redis: ${line}`) });
  ctx.resources.add({ name, stop: () => server.stop('SIGTERM', 10_000) });
  ctx.progress.ok(`redis: started redis-server on ${where} (log in ${shown})`);
}

async function findOrInstall(ctx: StackContext): Promise<string> {
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
