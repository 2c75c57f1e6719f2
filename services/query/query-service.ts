import type { ServerAccess } from '../../shared/grpc';
import type { S3Client } from '@aws-sdk/client-s3';
import { createFileBlobStore, createS3BlobStore } from '../../shared/blobs';
import { changeChannels } from '../../shared/changes';
import { createBlobReaders } from './blobs/blob-readers';
import { createPeriodic, type Periodic } from '../../shared/runtime';
import type { Evaluation } from '../../shared/generated/crucible/storage/v1/evaluation';
import { pastHotRetention } from './read-models/hot-retention';
import { createHotRetentionSweep, type HotRetentionSweep } from './redis/hot-retention-sweep';
import { createArchiveReader } from './archive/archive-reader';
import { createRetiredEvaluations } from './archive/retired-evaluations';
import type { RedisClient } from '../../shared/redis';
import type { Pool } from 'pg';
import type { Config } from '../../shared/config';
import type { Logger } from '../../shared/logging';
import { createChangeHub, type ChangeHub } from './live/change-hub';
import { createReadiness } from './live/readiness';
import { createReadGuard } from './live/read-guard';
import { createOpenCalls } from './live/open-calls';
import { createStreamBuffers } from './live/stream-buffers';
import { createPostgresBodyStore } from './postgres/body-store';
import { createPostgresLogs } from './postgres/log-segments';
import { createPostgresMetricSeries } from './postgres/metric-series';
import { createPostgresSecurityEvents } from './postgres/security-events';
import { createQueueMetrics } from './redis/queue-metrics';
import { createLiveExecutors } from './redis/executors';
import { createPostgresEvaluationEvents } from './postgres/evaluation-events';
import { createPostgresEventLog, createPostgresMetadataFromLog } from './postgres/event-log';
import { createMetadataSource } from './redis/metadata-source';
import { createIndexCounts, keepIndexes } from './redis/index-counts';
import { createProjectionApplier } from './projection/applier';
import { createProjector, type Projector } from './projection/projector';
import type { EventLog } from './projection/event-log';
import { rebuildReadModels } from './projection/rebuild';
import { minCheckpoint } from './read-models/checkpoints';
import { createChangeLog } from './redis/change-log';
import { createCheckpoints } from './redis/checkpoints';
import { createEvaluationHistory } from './redis/evaluation-history';
import { createEvaluationList } from './redis/evaluation-list';
import { createEvaluationRecords } from './redis/evaluation-records';
import { createKeyLayout } from './read-models/keys';
import { createChangeLogTail } from './redis/change-log-tail';
import { subscribeToChanges, type ChangeSubscription } from './redis/change-subscriber';
import { createRedisProjectionStore } from './redis/projection-store';
import { createUndecodableEntries } from './redis/undecodable-entries';
import { checkMemoryPolicy } from './redis/memory-policy';
import { watchLostKeys, type LostKeysWatch } from './redis/lost-keys';
import { redisRefusesWrites } from './redis/errors';
import { createS3OutputUrls } from './blobs/output-urls';
import { createQueryServer } from './server';
import type { Registry } from 'prom-client';
import { createShutdown } from './live/shutdown';
import { createQueryMetrics, type QueryMetrics } from './metrics';
import { createChangeTraces } from './live/change-traces';
import { createLogHints } from './live/log-hints';
import { NO_TRACING, type Tracing } from '../../shared/tracing';

/** Everything that holds a socket, created (and closed) by main.ts or a test. */
export interface QueryServiceConnections {
  /** Transport, gate and reflection of its gRPC server (shared/grpc/access.ts). */
  readonly access: ServerAccess;
  /** Read-only sessions over the event log. */
  readonly pool: Pool;
  /** Reads: lookups, lists, replays, the read guard's checkpoints. */
  readonly redis: RedisClient;
  /**
   * The projection's own: its reads, scripts and rebuilds. Replies come in order on a
   * connection, so a replay from position 0 (MiBs of change log) on the readers' connection
   * would hold the projection's next step behind it.
   */
  readonly projection: RedisClient;
  /** Pub/sub only: a subscribed connection can run nothing else. */
  readonly subscriber: RedisClient;
  /** XREAD BLOCK only: a blocked connection holds every command behind it. */
  readonly blocking: RedisClient;
  readonly s3: S3Client;
  /**
   * Signs GetOutputUrl's URLs when clients reach S3 by another address (S3_PUBLIC_ENDPOINT);
   * `s3` signs them otherwise. Signing sends nothing, so this one never connects.
   */
  readonly s3Public?: S3Client;
}

export interface QueryService {
  /** Binds host:port (0 picks one), then starts the projection and the live tail. Returns the port. */
  start(host: string, port: number): Promise<number>;
  /**
   * Ends every open stream with UNAVAILABLE (naming its resume point), lets unary calls finish
   * within `graceMs`, and stops the projection and the tail. Connections stay open: their
   * owner closes them afterwards.
   */
  shutdown(graceMs: number): Promise<void>;
  readonly projector: Projector;
  readonly hub: ChangeHub;
}

/**
 * Metadata a replica keeps to put back into updates stored without it (redis/metadata-source.ts):
 * the evaluations under way are hits, a miss costs one MGET of records per partition.
 */
const METADATA_CACHE_BYTES = 16 * 1024 * 1024;

/**
 * Every partition's indexes are compared with their counts (one MULTI of a few O(1) commands
 * each) every this many quiet-timer periods (CATCH_UP_INTERVAL_MS: 5 s by default): the one way
 * to hear of a member deleted by hand, which raises no event the projection's own writes do not
 * raise too. Reads and keyspace events ask sooner.
 */
const INDEX_AUDIT_PERIODS = 5;

export interface QueryServiceOptions {
  /** Events per catch-up batch (default 500). */
  readonly batchSize?: number;
  /** Where the service's metrics go (main.ts serves them); left out: nowhere. */
  readonly registry?: Registry;
  /** Where its spans go (shared/tracing); left out: nowhere. */
  readonly tracing?: Tracing;
  /** Told when a firehose client is too slow and falls back to catch-up reads (tests). */
  readonly onSlowConsumer?: () => void;
  /** What HOT_RETENTION judges ages by (ms since the epoch); tests age data with their own. */
  readonly clock?: () => number;
}

/**
 * The event log's horizon, read again each time and, while PostgreSQL cannot say, the last one
 * it said (the horizon only moves up): a watch resuming from Redis needs no PostgreSQL then.
 */
function lastKnownHorizon(eventLog: Pick<EventLog, 'horizon'>): () => Promise<bigint> {
  let known: bigint | undefined;
  return async () => {
    try {
      known = await eventLog.horizon();
    } catch (err) {
      if (known === undefined) throw err;
    }
    return known;
  };
}

/** The sweep on a timer; a failed one is logged and the next tries again. */
function createPeriodicSweep(
  sweep: HotRetentionSweep,
  intervalMs: number,
  logger: Logger,
  metrics: QueryMetrics | undefined,
): Periodic {
  return createPeriodic(
    async () => {
      const evicted = await sweep.sweep();
      metrics?.hotRetentionSwept(evicted);
      if (evicted > 0) logger.info('ended evaluations past HOT_RETENTION left the read models', { evicted });
    },
    intervalMs,
    (err) => logger.warn('the HOT_RETENTION sweep failed; the next one retries', { err }),
  );
}

/**
 * Wires the query side from its connections: read models over Redis, the projector fed by
 * pub/sub and PostgreSQL, the replica's change-log tail and hub, and the gRPC server. Kept
 * apart from main.ts (process concerns: env, signals, exit codes) so that tests compose the
 * very same service in-process.
 */
export function createQueryService(
  config: Config,
  connections: QueryServiceConnections,
  logger: Logger,
  options: QueryServiceOptions = {},
): QueryService {
  const { pool, redis, projection, subscriber, blocking, s3 } = connections;
  const layout = createKeyLayout(config.redisKeyPrefix, config.readModelPartitions, config.indexedMetadataKeys);
  const shutdown = createShutdown();
  const clock = options.clock ?? Date.now;

  const metrics = options.registry === undefined ? undefined : createQueryMetrics(options.registry);
  // Nothing to keep, and no clock read per delivered change, unless spans go somewhere.
  const traces =
    options.tracing === undefined || options.tracing === NO_TRACING ? undefined : createChangeTraces(options.tracing);
  const eventLog = createPostgresEventLog(pool);
  const checkpoints = createCheckpoints(redis, layout);
  // One count and one rate-limited log line for every reader that skips an undecodable entry.
  const undecodable = createUndecodableEntries(logger.child({ component: 'read-models' }));
  const records = createEvaluationRecords(redis, layout, undecodable);
  const hub = createChangeHub((err) => logger.error('a watcher failed on a change', { err }));
  const metadata = createMetadataSource({
    redis,
    layout,
    fromLog: createPostgresMetadataFromLog(pool),
    maxBytes: METADATA_CACHE_BYTES,
  });

  let setServing: (serving: boolean) => void = () => undefined;
  const store = createRedisProjectionStore(projection, layout, config.streams.changeLogRetention);
  // HOT_RETENTION: ended evaluations leave Redis (read-models/hot-retention.ts), unless the
  // sweep is off; then `hotMs` is undefined and nothing is judged by it.
  const hotMs = config.retention.hotSweepIntervalMs > 0 ? config.retention.hotMs : undefined;
  const hotSweep =
    hotMs !== undefined
      ? createPeriodicSweep(
          createHotRetentionSweep({ redis: projection, store, layout, hotMs, clock }),
          config.retention.hotSweepIntervalMs,
          logger.child({ component: 'hot-retention' }),
          metrics,
        )
      : undefined;
  const projectionLogger = logger.child({ component: 'projection' });
  const projector = createProjector({
    eventLog,
    applier: createProjectionApplier({
      store,
      eventLog,
      layout,
      logger: projectionLogger,
      ...(hotMs !== undefined ? { keepsOut: (state: Evaluation) => pastHotRetention(state, clock(), hotMs) } : {}),
    }),
    checkpoints: createCheckpoints(projection, layout),
    logger: projectionLogger,
    rebuild: async () => {
      metrics?.rebuildProgressed(0, 0n);
      try {
        await rebuildReadModels({
          redis: projection,
          layout,
          eventLog,
          store,
          logger: projectionLogger,
          ...(metrics !== undefined ? { onProgress: metrics.rebuildProgressed } : {}),
        });
      } finally {
        metrics?.rebuildEnded();
      }
    },
    catchUpIntervalMs: config.catchUpIntervalMs,
    ...(options.batchSize !== undefined ? { batchSize: options.batchSize } : {}),
    onServingChange: (serving) => {
      // Either way the read models were (or are being) rebuilt, maybe from a replaced log in
      // which an id names another evaluation; what a read in flight brought in while they were
      // is dropped when serving resumes.
      metadata.clear();
      setServing(serving);
    },
    onReplayedOverLoss: () => indexes.sweep(),
    stallReason: redisRefusesWrites,
    onStep: () => tail.nudge(),
  });
  const indexes = keepIndexes({
    counts: createIndexCounts({ redis: projection, store, layout, onLost: (evalIds) => projector.repair(evalIds) }),
    intervalMs: INDEX_AUDIT_PERIODS * config.catchUpIntervalMs,
    logger: projectionLogger,
  });
  const tail = createChangeLogTail({
    blocking,
    commands: redis,
    layout,
    hub,
    undecodable,
    metadata,
    logger: logger.child({ component: 'tail' }),
    ...(traces !== undefined
      ? {
          onPublished: (position: bigint, startedAt: number) =>
            traces.delivered(position, startedAt, hub.listenerCount),
        }
      : {}),
  });

  const openCalls = createOpenCalls(config.streams);
  const streamBuffers = metrics !== undefined ? createStreamBuffers() : undefined;
  const s3Blobs = createS3BlobStore(s3, config.s3.bucket);
  const archives = createArchiveReader(s3Blobs);
  const retired = createRetiredEvaluations({
    pool,
    archives,
    hotMs,
    clock,
  });
  const logHints = createLogHints();
  const server = createQueryServer({
    access: connections.access,
    records,
    retired,
    list: createEvaluationList(redis, layout, records),
    history: createEvaluationHistory(redis, layout, undecodable),
    changeLog: createChangeLog(redis, layout, undecodable, metadata, lastKnownHorizon(eventLog)),
    checkpoints,
    hub,
    logHints,
    readiness: createReadiness(projector, shutdown.shutdown),
    openCalls,
    guard: createReadGuard({
      projection: projector,
      firstPositionOf: (evalId) => eventLog.firstPositionOf(evalId),
      checkIndexes: () => indexes.check(),
      logger: logger.child({ component: 'read-guard' }),
    }),
    projector,
    eventLog,
    evaluationEvents: createPostgresEvaluationEvents(pool, archives),
    metrics: createPostgresMetricSeries(pool, archives),
    securityEvents: createPostgresSecurityEvents(pool),
    queue: createQueueMetrics(redis, layout),
    executors: createLiveExecutors(redis, config.redisKeyPrefix),
    indexedMetadataKeys: config.indexedMetadataKeys,
    // Ended evaluations leave past HOT_RETENTION when swept, and past ACTIVE_RETENTION anyway
    // (archived: a rebuild no longer finds them in the log).
    coversEndedSince: () => new Date(clock() - (hotMs ?? config.retention.activeMs)),
    bodies: createPostgresBodyStore(pool, archives),
    blobs: createBlobReaders(
      s3Blobs,
      config.blobFallback.dir !== '' ? createFileBlobStore(config.blobFallback.dir) : undefined,
    ),
    logs: createPostgresLogs(pool),
    outputUrls: createS3OutputUrls(connections.s3Public ?? s3, config.s3.bucket),
    outputUrlConfig: config.outputUrls,
    streams: config.streams,
    maxRequestBytesInFlight: config.limits.maxRequestBytesInFlight,
    requestReadTimeoutMs: config.limits.requestReadTimeoutMs,
    connectionIdleMs: config.limits.connectionIdleMs,
    shutdown: shutdown.shutdown,
    logger,
    ...(options.onSlowConsumer !== undefined ? { onSlowConsumer: options.onSlowConsumer } : {}),
    ...(streamBuffers !== undefined ? { streamBuffers } : {}),
    ...(metrics !== undefined ? { rpcMetrics: metrics.rpc } : {}),
    ...(options.tracing !== undefined ? { tracing: options.tracing } : {}),
  });
  metrics?.watch({
    projection: () => projector.status(),
    openCalls: () => openCalls.count,
    watchers: () => hub.listenerCount,
    ...(streamBuffers !== undefined ? { streamBuffers } : {}),
  });
  setServing = (serving) => server.setServing(serving);

  let subscription: ChangeSubscription | undefined;
  let lostKeys: LostKeysWatch | undefined;
  const onProjectionReconnect = (): void => projector.requestCatchUp('redis reconnected');

  return {
    projector,
    hub,
    async start(host, port) {
      await checkMemoryPolicy(projection, config.redisAllowEviction, logger);
      const bound = await server.listen(host, port);
      subscription = subscribeToChanges(
        subscriber,
        changeChannels(config.redisKeyPrefix, config.readModelPartitions),
        {
          onChange: (position, traceparent) => {
            if (traceparent !== undefined) traces?.heard(position, traceparent);
            projector.notify(position);
          },
          onLogsAppended: (evalId, stream) => logHints.hint(evalId, stream),
          onReconnect: () => projector.requestCatchUp('pub/sub reconnected'),
        },
        logger,
      );
      if (config.redisKeyspaceEvents)
        lostKeys = watchLostKeys({
          subscriber,
          config: projection,
          layout,
          logger: logger.child({ component: 'lost-keys' }),
          onLost: (evalId) => projector.repair([evalId]),
          onCheckpointLost: () => projector.requestCatchUp('a checkpoint key was deleted'),
          onIndexLost: () => indexes.check(),
        });
      projection.on('ready', onProjectionReconnect);
      // Subscribed before the first catch-up reads the log: a change committed after that read
      // is then announced, not left to the quiet timer. Bounded: a Redis that is down must not
      // hold the start (ioredis subscribes once it is back, and the timer covers the gap).
      await Promise.race([
        Promise.all([subscription.ready, lostKeys?.ready]),
        new Promise((resolve) => setTimeout(resolve, 2000).unref()),
      ]);
      projector.start();
      indexes.start();
      hotSweep?.start();
      // The live tail starts where the read models are.
      tail.start(async () => minCheckpoint(await checkpoints.readAll()));
      return bound;
    },
    async shutdown(graceMs) {
      shutdown.begin();
      projection.off('ready', onProjectionReconnect);
      await server.shutdown(graceMs);
      await subscription?.close();
      await lostKeys?.close();
      await indexes.stop();
      await hotSweep?.stop();
      await projector.stop();
      await tail.stop();
    },
  };
}
