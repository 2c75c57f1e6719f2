import { rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { formatHostPort, type HostPort } from '../../shared/config';
import type { RedisUser } from '../../shared/redis';
import type { StackContext } from './context';
import { StackError } from './progress';
import type { RestartPolicy } from '../process';
import { runChecked, waitUntil } from './processes';
import { findRedisServer, probeConnection, probeRedis, startRedisServer } from './redis';
import { cannotStart, findExecutable } from './system';

/** Nodes of a local cluster: three primaries, each with one replica. */
export const LOCAL_CLUSTER_SIZE = 6;
/**
 * How long a primary may be unreachable before its replica takes over. Short, for a local
 * cluster whose failovers are tests; Redis' default is 15 s.
 */
const NODE_TIMEOUT_MS = 2000;
/**
 * A node that dies is started again only after its replica has had time to take over (the
 * node timeout, the failure reports, the election): started sooner, a primary without
 * persistence comes back empty before anyone marked it failed, stays primary, and its replica
 * resyncs from it and empties itself, so the shard loses every key.
 */
const NODE_RESTART_POLICY: RestartPolicy = {
  initialDelayMs: 4 * NODE_TIMEOUT_MS,
  maxDelayMs: 30_000,
  resetAfterMs: 60_000,
};

const where = formatHostPort;

function nodeUrl(redisUrl: string, node: HostPort): string {
  const url = new URL(redisUrl);
  url.hostname = node.host.includes(':') ? `[${node.host}]` : node.host;
  url.port = String(node.port);
  url.pathname = '';
  return url.toString();
}

/** Whether every node of the cluster says the cluster is up (`cluster_state:ok`). */
async function clusterIsUp(redisUrl: string, nodes: readonly HostPort[]): Promise<boolean> {
  const states = await Promise.all(
    nodes.map(async (node) => {
      const client = probeConnection(nodeUrl(redisUrl, node));
      client.on('error', () => undefined);
      try {
        await client.connect();
        return /cluster_state:ok/.test(String(await client.call('CLUSTER', 'INFO')));
      } catch {
        return false;
      } finally {
        client.disconnect();
      }
    }),
  );
  return states.every(Boolean);
}

/**
 * Makes the Redis Cluster REDIS_CLUSTER_NODES names answer: uses it when it is up; otherwise,
 * when every node named is a local address where nothing listens, starts `redis-server` on each
 * (cluster mode, no persistence, the services' users and keyspace events as a single Redis we
 * start has them) and joins them with `redis-cli --cluster create --cluster-replicas 1`. A node
 * that dies is started again with its nodes.conf and rejoins (empty: the query side rebuilds
 * what it held from the event log).
 */
export async function ensureRedisCluster(
  redisUrl: string,
  nodes: readonly HostPort[],
  ctx: StackContext,
  users: readonly RedisUser[] = [],
): Promise<void> {
  const named = nodes.map(where).join(', ');
  if (await clusterIsUp(redisUrl, nodes)) {
    ctx.progress.ok(`redis cluster: ${named} answers; using it`);
    return;
  }
  for (const node of nodes) {
    const found = await probeRedis(nodeUrl(redisUrl, node));
    if (found.kind === 'answers') {
      throw new StackError(
        `redis cluster: ${where(node)} answers but the cluster REDIS_CLUSTER_NODES names is not up`,
        'repair the cluster (redis-cli --cluster check), or stop what runs on those ports so that a local cluster can be started',
      );
    }
    const refusal = cannotStart(
      { what: 'a Redis Cluster node', variable: 'REDIS_CLUSTER_NODES', host: node.host, port: String(node.port) },
      found,
    );
    if (refusal !== undefined) throw refusal;
  }
  if (nodes.length !== LOCAL_CLUSTER_SIZE) {
    throw new StackError(
      `redis cluster: nothing answers on ${named}, and a local cluster needs ${LOCAL_CLUSTER_SIZE} addresses (three primaries, three replicas), not ${nodes.length}`,
      `name ${LOCAL_CLUSTER_SIZE} local host:port addresses in REDIS_CLUSTER_NODES, or point it at a running cluster`,
    );
  }

  ctx.progress.step(`redis cluster: nothing answers on ${named}; starting ${nodes.length} redis-server nodes`);
  const binary = await findRedisServer(ctx);
  const cli = findExecutable('redis-cli', ['/usr/bin', '/usr/local/bin']);
  if (cli === undefined)
    throw new StackError('redis cluster: redis-cli not found', 'install Redis (apt-get install redis-server)');
  const root = join(ctx.dataDir, 'redis-cluster');
  // A cluster is created from empty nodes: what an earlier run left (nodes.conf) is not it.
  rmSync(root, { recursive: true, force: true });
  const password = decodeURIComponent(new URL(redisUrl).password);
  for (const node of nodes) await startNode(binary, node, join(root, String(node.port)), users, redisUrl, ctx);

  const auth = password === '' ? [] : ['-a', password, '--no-auth-warning'];
  await runChecked(
    cli,
    [...auth, '--cluster', 'create', ...nodes.map(where), '--cluster-replicas', '1', '--cluster-yes'],
    ctx.projectRoot,
    "see the nodes' logs in .data/redis-cluster/<port>/redis.log",
  );
  await waitUntil('redis cluster: cluster_state:ok on every node', () => clusterIsUp(redisUrl, nodes), {
    timeoutMs: 30_000,
    signal: ctx.signal,
    advice: `see the nodes' logs in ${relative(ctx.projectRoot, root)}/<port>/redis.log`,
  });
  ctx.progress.ok(`redis cluster: started on ${named} (3 primaries, 3 replicas)`);
}

async function startNode(
  binary: string,
  node: HostPort,
  dir: string,
  users: readonly RedisUser[],
  redisUrl: string,
  ctx: StackContext,
): Promise<void> {
  const password = decodeURIComponent(new URL(redisUrl).password);
  await startRedisServer({
    binary,
    url: nodeUrl(redisUrl, node),
    dir,
    users,
    // prettier-ignore
    extraArgs: [
      '--cluster-enabled', 'yes',
      '--cluster-config-file', 'nodes.conf',
      '--cluster-node-timeout', String(NODE_TIMEOUT_MS),
      // The nodes of a local cluster share one machine: a replica that has been cut off briefly
      // still takes over (the default refuses one disconnected for ten node timeouts).
      '--cluster-replica-validity-factor', '0',
      ...(password === '' ? [] : ['--masterauth', password]),
    ],
    name: `redis-server (cluster) on ${where(node)}`,
    policy: NODE_RESTART_POLICY,
    log: (line) => ctx.progress.warn(`redis cluster: ${line}`),
    ctx,
  });
}
