import { Redis, type Cluster } from 'ioredis';
import { isCluster, onEveryPrimary, type RedisClient } from '../../../shared/redis';
import type { Logger } from '../../../shared/logging';
import type { KeyLayout } from '../read-models/keys';
import { isTerminalProto } from '../../../shared/domain';
import { statusOfEvaluation } from '../wire/metadata';
import { enableKeyspaceEvents } from '../../../shared/redis';

const EVENTS = ['del', 'expired', 'evicted'];
/** Bytes of a record that hold its status (field 2, after an eval id of at most 128 characters, 512 bytes). */
const RECORD_HEAD_BYTES = 1024;

export interface LostKeysWatch {
  /** Settles once Redis confirmed the subscription (or refused it). Never rejects. */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

/**
 * Hears of read-model keys that disappear — deleted by hand, evicted, expired — from Redis'
 * keyspace events, so that they are repaired within moments, whether or not a read ever meets
 * them: a record or history is rewritten from the log (`onLost`), a lost checkpoint makes the
 * projector replay (`onCheckpointLost`), a lost index is rebuilt from the records (`onIndexLost`).
 * A deletion is checked against the record first (one GETRANGE per deletion, sent together, for the deletions
 * heard at once): the projection deletes one kind of key itself, the history of an evaluation
 * that ended, so a deleted history whose record is terminal is taken as that; and a record or
 * history that is still there (moved to another node by a slot migration) is not lost. Lists
 * are otherwise rewritten in place, so the projection's own writes raise no other event; a
 * rebuild's deletions do, and their repairs rewrite what the rebuild wrote.
 *
 * The events must be switched on (`notify-keyspace-events`): done at start and after every
 * reconnect of `config` (a Redis restarted empty forgets it); on a cluster, on every primary, and
 * every primary is followed (keyspace events are the node's own: see followKeyEvents). A Redis that refuses CONFIG (a
 * managed one) is warned about: lost keys are then found by reads only. Events are at most once
 * (missed while the subscriber reconnects), which reads still cover.
 */
export function watchLostKeys(deps: {
  readonly subscriber: RedisClient;
  readonly config: RedisClient;
  readonly layout: KeyLayout;
  readonly logger: Logger;
  readonly onLost: (evalId: string) => void;
  readonly onCheckpointLost: () => void;
  /** An index, or the indexes' counts, deleted: the indexes are checked (redis/index-counts.ts). */
  readonly onIndexLost: () => void;
}): LostKeysWatch {
  const { subscriber, config, layout, logger } = deps;
  // A cluster has database 0 only.
  const db = isCluster(subscriber) ? 0 : (subscriber.options.db ?? 0);
  const channels = EVENTS.map((event) => `__keyevent@${db}__:${event}`);
  let warned = false;

  const enableOn = async (node: Redis): Promise<void> => {
    try {
      // A set that has what is needed is left alone (and a user not allowed CONFIG SET is fine then).
      await enableKeyspaceEvents(node);
    } catch (err) {
      if (!warned) logger.warn('cannot switch on Redis keyspace events; lost keys are found by reads only', { err });
      warned = true;
    }
  };
  const enable = async (): Promise<void> => {
    try {
      await onEveryPrimary(config, enableOn);
    } catch (err) {
      if (!warned) logger.warn('cannot switch on Redis keyspace events; lost keys are found by reads only', { err });
      warned = true;
    }
  };
  const onReady = (): void => void enable();
  config.on('ready', onReady);

  // Records and histories heard deleted, per partition (id → whether its history was), checked
  // against the records in one go: a DEL is not always a loss. The projection deletes the
  // history of an evaluation that ended, and on a cluster a slot migration deletes what it
  // moved from the source node (MIGRATE), which the record read through the cluster client
  // then finds on the target.
  let deleted = new Map<number, Map<string, boolean>>();
  const checkDeleted = async (): Promise<void> => {
    const batch = deleted;
    deleted = new Map();
    for (const [partition, ids] of batch) {
      const all = [...ids];
      for (let from = 0; from < all.length; from += 1000) await checkRecords(partition, all.slice(from, from + 1000));
    }
  };
  const checkRecords = async (partition: number, heard: readonly [string, boolean][]): Promise<void> => {
    // The status is the record's second field, right behind its id: the head of each record is
    // enough (a whole one may hold a MiB of metadata). One command each, sent together: on a
    // cluster each follows its own ASK or MOVED when the slot is being migrated.
    const read = async ([id, historyDeleted]: [string, boolean]): Promise<boolean> => {
      const head = await config.getrangeBuffer(layout.record(partition, id), 0, RECORD_HEAD_BYTES - 1);
      // GETRANGE of a missing key is empty, as no record is.
      if (head.length === 0) return true;
      if (!historyDeleted || isTerminalProto(statusOfEvaluation(head))) return false;
      return (await config.exists(layout.history(partition, id))) === 0;
    };
    const lost = await Promise.allSettled(heard.map(read));
    // A failed read: the repair finds out for itself.
    lost.forEach((verdict, i) => {
      if (verdict.status === 'rejected' || verdict.value) deps.onLost((heard[i] as [string, boolean])[0]);
    });
  };
  const heardDeleted = (partition: number, evalId: string, history: boolean): void => {
    if (deleted.size === 0) setImmediate(() => void checkDeleted());
    const ids = deleted.get(partition) ?? new Map<string, boolean>();
    deleted.set(partition, ids);
    ids.set(evalId, history || (ids.get(evalId) ?? false));
  };
  const onMessage = (channel: string, key: string): void => {
    if (!channels.includes(channel)) return;
    const described = layout.describe(key);
    if (described === undefined) return;
    if (described.kind === 'record' || described.kind === 'history')
      heardDeleted(described.partition, described.evalId, described.kind === 'history');
    else if (described.kind === 'checkpoint') deps.onCheckpointLost();
    else if (described.kind === 'index' || described.kind === 'counts' || described.kind === 'facets')
      deps.onIndexLost();
  };
  const following = isCluster(subscriber)
    ? followEveryPrimary(subscriber, channels, onMessage, enableOn, logger)
    : followOne(subscriber, channels, onMessage, logger);
  const ready = Promise.all([enable(), following.ready]).then(() => undefined);
  return {
    ready,
    async close() {
      config.off('ready', onReady);
      await following.close();
    },
  };
}

interface Following {
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

type OnMessage = (channel: string, key: string) => void;

function followOne(subscriber: Redis, channels: readonly string[], onMessage: OnMessage, logger: Logger): Following {
  subscriber.on('message', onMessage);
  const subscribe = (): Promise<void> =>
    subscriber.subscribe(...channels).then(
      () => undefined,
      (err: unknown) => logger.warn('could not subscribe to keyspace events yet', { err }),
    );
  // As the change subscription: not before the connection is ready (redis/ioredis#2037).
  const ready =
    subscriber.status === 'ready'
      ? subscribe()
      : new Promise<void>((resolve) => subscriber.once('ready', () => resolve(subscribe())));
  return {
    ready,
    async close() {
      subscriber.off('message', onMessage);
      await subscriber.unsubscribe(...channels).catch(() => undefined);
    },
  };
}

/**
 * A cluster node publishes the keyspace events of its own keys only: one subscriber connection
 * per primary, set again whenever ioredis refreshes the topology (a failover promotes a replica,
 * which gets the events switched on and a subscriber of its own; a node gone loses its own).
 * Each connection reconnects by itself (and re-subscribes: ioredis' autoResubscribe), switching
 * the events on again each time (a node restarted empty forgot them). The subscribers are set
 * without waiting on anything, so the events of a failover (-node, +node, refresh) that come
 * together open one connection per primary, not one each.
 */
function followEveryPrimary(
  cluster: Cluster,
  channels: readonly string[],
  onMessage: OnMessage,
  enableOn: (node: Redis) => Promise<void>,
  logger: Logger,
): Following {
  const subscribers = new Map<string, Redis>();
  let closed = false;
  const nodeKey = (node: Redis): string => `${node.options.host ?? ''}:${node.options.port ?? ''}`;
  /** A subscriber for `node`; resolves once subscribed (or refused: then it warns). */
  const open = (node: Redis): { connection: Redis; subscribed: Promise<void> } => {
    const connection = new Redis({
      ...node.options,
      connectionName: 'crucible-query-keyevents',
      lazyConnect: false,
      enableOfflineQueue: true,
      readOnly: false,
      // The cluster's own node connections never reconnect (it replaces them); this one must.
      retryStrategy: (times: number) => Math.min(100 * times, 2000),
    });
    connection.on('error', () => undefined); // the cluster client reports the node's outages
    connection.on('message', onMessage);
    connection.on('ready', () => void enableOn(connection));
    // Not before the connection is ready (redis/ioredis#2037); later reconnects re-subscribe by themselves.
    const subscribed = new Promise<void>((resolve) =>
      connection.once('ready', () =>
        resolve(
          connection.subscribe(...channels).then(
            () => undefined,
            (err: unknown) => logger.warn('could not subscribe to keyspace events yet', { node: nodeKey(node), err }),
          ),
        ),
      ),
    );
    return { connection, subscribed };
  };
  /**
   * Subscribers for the primaries known now, none for others (synchronously: concurrent calls
   * cannot open two for a node); resolves once the new ones subscribed.
   */
  const reconcile = (): Promise<unknown> => {
    if (closed) return Promise.resolve();
    const primaries = cluster.nodes('master');
    const wanted = new Set(primaries.map(nodeKey));
    for (const [key, connection] of subscribers) {
      if (wanted.has(key)) continue;
      subscribers.delete(key);
      connection.disconnect();
    }
    const subscribing: Promise<void>[] = [];
    for (const node of primaries) {
      if (subscribers.has(nodeKey(node))) continue;
      const { connection, subscribed } = open(node);
      subscribers.set(nodeKey(node), connection);
      subscribing.push(subscribed);
    }
    return Promise.all(subscribing);
  };
  const onTopology = (): void => void reconcile();
  cluster.on('refresh', onTopology);
  cluster.on('+node', onTopology);
  cluster.on('-node', onTopology);
  const ready =
    cluster.status === 'ready'
      ? reconcile().then(() => undefined)
      : new Promise<void>((resolve) => cluster.once('ready', () => resolve(reconcile().then(() => undefined))));
  return {
    ready,
    close() {
      closed = true;
      cluster.off('refresh', onTopology);
      cluster.off('+node', onTopology);
      cluster.off('-node', onTopology);
      for (const connection of subscribers.values()) connection.disconnect();
      subscribers.clear();
      return Promise.resolve();
    },
  };
}
