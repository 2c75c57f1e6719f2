import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { HostPort } from '../config';

/**
 * One Redis or a Redis Cluster, as the services use either: every command they send names keys
 * of one slot (a read-model partition's hash tag, or `{executors}`), so the same calls work on
 * both. What differs (a SCAN or CONFIG on every primary, sharded pub/sub, no blocking reads on
 * a shared connection) goes through the helpers below.
 */
export type RedisClient = Redis | Cluster;

/** Where Redis is: `url` alone, or the seed nodes of a cluster with `url`'s credentials and TLS. */
export interface RedisTarget {
  readonly url: string;
  readonly clusterNodes: readonly HostPort[];
}

export function redisTargetOf(config: {
  readonly redisUrl: string;
  readonly redisClusterNodes: readonly HostPort[];
}): RedisTarget {
  return { url: config.redisUrl, clusterNodes: config.redisClusterNodes };
}

export function isCluster(client: RedisClient): client is Cluster {
  return client instanceof Cluster;
}

/**
 * A client for `target` with per-connection `options` (ioredis' RedisOptions). On a cluster they
 * apply to every node's connection, except `enableOfflineQueue`, which is the cluster's own:
 * while no node can take a command it fails at once instead of waiting. Sharded subscribers
 * are on, so SSUBSCRIBE keeps one connection per shard however many channels it names.
 */
export function createRedisClient(target: RedisTarget, options: RedisOptions = {}): RedisClient {
  if (target.clusterNodes.length === 0) return new Redis(target.url, options);
  const url = new URL(target.url);
  const { enableOfflineQueue, lazyConnect, ...perNode } = options;
  const clusterOptions: ClusterOptions = {
    redisOptions: {
      ...perNode,
      ...(url.username !== '' ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password !== '' ? { password: decodeURIComponent(url.password) } : {}),
      ...(url.protocol === 'rediss:' ? { tls: perNode.tls ?? {} } : {}),
    },
    shardedSubscribers: true,
    // Reads go to primaries: a replica may not have the write a caller just saw acknowledged.
    scaleReads: 'master',
    // A failover takes the cluster a few seconds (cluster-node-timeout); commands sent meanwhile
    // retry on the new topology instead of failing at the first MOVED or CLUSTERDOWN.
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    slotsRefreshTimeout: 2000,
    clusterRetryStrategy: (times) => Math.min(100 * times, 2000),
    ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
  };
  return new Cluster(
    target.clusterNodes.map(({ host, port }) => ({ host, port })),
    clusterOptions,
  );
}

/** The primaries: the one Redis, or a connection to each primary node the cluster knows of. */
export function primariesOf(client: RedisClient): Redis[] {
  return isCluster(client) ? client.nodes('master') : [client];
}

/** How long a per-primary call waits for a cluster client to learn the topology. */
const TOPOLOGY_WAIT_MS = 5000;

/** The primaries, once a cluster client knows them (it learns them on connecting). */
async function knownPrimaries(client: RedisClient): Promise<Redis[]> {
  if (isCluster(client) && client.status !== 'ready') {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        client.off('ready', onReady);
        reject(new Error(`the Redis Cluster did not become ready within ${TOPOLOGY_WAIT_MS} ms`));
      }, TOPOLOGY_WAIT_MS);
      const onReady = (): void => {
        clearTimeout(timer);
        resolve();
      };
      client.once('ready', onReady);
    });
  }
  const nodes = primariesOf(client);
  if (nodes.length === 0) throw new Error('the Redis Cluster has no known primary');
  return nodes;
}

/** Runs `command` on every primary (CONFIG and the like are per node); the replies in order. */
export async function onEveryPrimary<T>(client: RedisClient, command: (node: Redis) => Promise<T>): Promise<T[]> {
  return Promise.all((await knownPrimaries(client)).map(command));
}

/**
 * Runs `work` on the one Redis, or on every node of the cluster, replicas included, one after
 * the other: for what each node keeps to itself and a failover must not lose (ACL users,
 * CONFIG). Waits for a cluster client to learn the topology.
 */
export async function onEveryNode(client: RedisClient, work: (node: Redis) => Promise<void>): Promise<void> {
  if (isCluster(client)) await knownPrimaries(client);
  const nodes = isCluster(client) ? client.nodes('all') : [client];
  for (const node of nodes) await work(node);
}

/**
 * Every key matching `pattern`, page by page (SCAN ... COUNT `count`), on the one Redis or on
 * every primary of the cluster. As SCAN, a key that exists throughout is seen at least once.
 * On a cluster whose slots move meanwhile, a key moved off a node before its SCAN reached it
 * and onto one whose SCAN had passed is missed: callers run again (sweeps, the rebuild's fence).
 */
export async function* scanKeys(client: RedisClient, pattern: string, count: number): AsyncGenerator<string[]> {
  for (const node of await knownPrimaries(client)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', count);
      cursor = next;
      if (keys.length > 0) yield keys;
    } while (cursor !== '0');
  }
}
