import { monotonicFactory } from 'ulid';
import { loadConfig, settingsHelp } from '../../shared/config';
import { createLogger } from '../../shared/logging';
import { createPool, runMigrations } from '../../shared/postgres';
import { createRedisClient, redisTargetOf } from '../../shared/redis';
import {
  closeAll,
  createPeriodic,
  exitOnFailure,
  helpText,
  onReloadSignal,
  onShutdownSignal,
  retryAtStartup,
  type Closeable,
} from '../../shared/runtime';
import { createServerAccess } from '../../shared/grpc';
import { createS3Client, observeS3Requests } from '../../shared/s3';
import { createTracing } from '../../shared/tracing';
import {
  createMetricsRegistry,
  redisErrorCounter,
  s3RequestObserver,
  serveMetrics,
  watchPostgresPool,
} from '../../shared/metrics';
import { createCommandMetrics } from './metrics';
import { createCommandExecutor } from './application/command-executor';
import { createReaper, reaperRulesOf } from './application/reaper';
import { createRecentStates } from './application/recent-states';
import { createPostgresEvaluationStore } from './postgres/evaluation-store';
import { createPostgresRunningEvaluations } from './postgres/running-evaluations';
import { createRedisChangePublisher } from './redis/change-publisher';
import { createRedisExecutorHealth } from './redis/executor-health';
import { createFileBlobStore, createS3BlobStore } from '../../shared/blobs';
import { createBlobMover } from './application/blob-mover';
import { sweepAllOrphans } from './application/orphan-sweeper';
import { runRetention } from './application/retention';
import { createPostgresRetentionStore } from './postgres/retention-store';
import { createPostgresBlobReferences } from './postgres/blob-references';
import { createDirectUploads } from './application/direct-uploads';
import { createS3DirectUploads } from './blobs/s3-direct-uploads';
import { createPostgresUploadRecords } from './postgres/output-uploads';
import { createFallbackStore } from './blobs/fallback-store';
import { countFallbackBlobs, createPostgresFallbackBlobs } from './postgres/fallback-blobs';
import { createCommandServer } from './server';

const SUMMARY = `crucible-storage command service (gRPC crucible.storage.v1.EvaluationCommandService)

Validates and records evaluation lifecycle commands from executors in PostgreSQL (+ S3 for
large outputs and log segments, or BLOB_FALLBACK_DIR while S3 is down), applying pending
migrations at start-up, and publishes each change on Redis. Also fails evaluations whose
executor is gone, moves fallback blobs to S3, and deletes orphaned blobs.`;

async function main(): Promise<void> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(helpText(SUMMARY, settingsHelp()));
    return;
  }
  const config = loadConfig(process.env);
  const logger = createLogger(config.logLevel, { service: 'command' });
  const resources: Closeable[] = [];
  // First: a key or certificate that does not read stops the start before any connection.
  const access = await createServerAccess(config, logger);
  onReloadSignal(() => access.reload(), logger);

  const applied = await retryAtStartup(
    'connecting to PostgreSQL',
    () =>
      runMigrations({
        url: config.migrationDatabaseUrl,
        applicationName: 'crucible-command',
        session: config.postgres,
      }),
    logger,
  );
  if (applied.length > 0) logger.info('migrations applied', { applied });
  const pool = createPool(
    { url: config.databaseUrl, applicationName: 'crucible-command', poolSize: 20, session: config.postgres },
    (err) => logger.warn('an idle PostgreSQL connection failed; it is replaced on next use', { err: err.message }),
  );
  resources.push({ name: 'postgres', close: () => pool.end() });
  const tracing = createTracing({ service: 'command', ...config.tracing });
  resources.push({ name: 'tracing', close: () => tracing.shutdown() });
  const registry = createMetricsRegistry('command');
  const metrics = createCommandMetrics(registry);
  watchPostgresPool(registry, pool);
  const redisError = redisErrorCounter(registry);

  // Publishing never waits for a reconnect (no offline queue): the event is durable in
  // PostgreSQL and the query side catches up from the log.
  const redis = createRedisClient(redisTargetOf(config), { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  let redisDown = false;
  // A cluster reports a node's failure as "node error", the whole cluster's as "error".
  const onRedisError = (err: Error): void => {
    redisError('publisher');
    if (!redisDown)
      logger.warn('redis unavailable; changes reach the query side through catch-up, health reports are refused', {
        err: err.message,
      });
    redisDown = true;
  };
  redis.on('error', onRedisError);
  redis.on('node error', onRedisError);
  redis.on('ready', () => {
    if (redisDown) logger.info('redis available again');
    redisDown = false;
  });
  resources.push({ name: 'redis', close: async () => void (await redis.quit().catch(() => redis.disconnect())) });

  const s3 = createS3Client(config.s3, logger);
  observeS3Requests(s3, s3RequestObserver(registry));
  resources.push({ name: 's3', close: () => Promise.resolve(s3.destroy()) });

  const s3Store = createS3BlobStore(s3, config.s3.bucket, config.s3.sse, config.s3.multipart);
  // Signs the part URLs of direct uploads for the address executors reach S3 by; sends nothing.
  const s3Signer =
    config.s3.publicEndpoint !== '' ? createS3Client({ ...config.s3, endpoint: config.s3.publicEndpoint }, logger) : s3;
  if (s3Signer !== s3)
    resources.push({ name: 's3 (public endpoint)', close: () => Promise.resolve(s3Signer.destroy()) });
  const fallbackStore = config.blobFallback.dir !== '' ? createFileBlobStore(config.blobFallback.dir) : undefined;
  const newUlid = monotonicFactory();
  const clock = { now: () => new Date() };
  const evaluationStore = createPostgresEvaluationStore(pool, { onBatch: metrics.batchWritten });
  const recentStates = createRecentStates(config.commandStateCacheEntries);
  const executor = createCommandExecutor({
    store: evaluationStore,
    blobs: createFallbackStore({
      primary: s3Store,
      fallback: fallbackStore,
      retryPrimaryAfterMs: config.blobFallback.retryPrimaryAfterMs,
      now: Date.now,
      logger,
    }),
    publisher: createRedisChangePublisher(redis, config.redisKeyPrefix, config.readModelPartitions),
    clock,
    newId: () => newUlid(),
    limits: config.limits,
    recentStates,
    admission: { maxInProgress: config.maxPendingCommands, maxQueued: config.maxQueuedCommands },
    logger,
  });
  // Reports and last-seen times share the publisher's connection: both must fail at once, not
  // queue, while Redis is down.
  const executorHealth = createRedisExecutorHealth(redis, config.redisKeyPrefix, config.executors);
  const uploads = createDirectUploads({
    store: evaluationStore,
    records: createPostgresUploadRecords(pool),
    transport: createS3DirectUploads({ client: s3, signer: s3Signer, bucket: config.s3.bucket, sse: config.s3.sse }),
    newId: () => newUlid(),
    now: () => new Date(),
    limits: {
      partBytes: config.s3.multipart.partBytes,
      uploadExpirySeconds: config.outputUrls.uploadExpirySeconds,
      previewBytes: config.limits.previewBytes,
    },
    logger: logger.child({ component: 'uploads' }),
  });
  const server = createCommandServer({
    access,
    executor,
    limits: config.limits,
    logger,
    uploads,
    executorHealth: { healthReports: executorHealth, clock, executors: config.executors },
    rpcMetrics: metrics.rpc,
    tracing,
  });
  metrics.watch({
    load: () => executor.load(),
    guesses: () => recentStates.counts,
    ...(fallbackStore !== undefined ? { fallbackBacklog: () => countFallbackBlobs(pool, 100_000) } : {}),
  });
  // Before the gRPC port: whoever waits for "listening" finds the metrics served.
  const metricsEndpoint =
    config.commandMetricsPort === undefined
      ? undefined
      : await serveMetrics({ registry, host: config.host, port: config.commandMetricsPort, logger });
  if (metricsEndpoint !== undefined) resources.push({ name: 'metrics', close: () => metricsEndpoint.close() });
  const port = await server.listen(config.host, config.commandPort);
  // Always printed, whatever LOG_LEVEL says: process supervisors and tests wait for this line.
  createLogger('info', { service: 'command' }).info('listening', {
    host: config.host,
    port,
    ...(metricsEndpoint !== undefined ? { metricsPort: metricsEndpoint.port } : {}),
    environment: config.environment,
  });

  // Every instance sweeps; two that pick the same evaluation write one event (reaper.ts).
  const reaper = createReaper({
    running: createPostgresRunningEvaluations(pool),
    health: executorHealth,
    executor,
    clock,
    rules: reaperRulesOf(config.executors),
    logger: logger.child({ component: 'reaper' }),
    onSweep: metrics.reaperSwept,
  });
  if (config.executors.lostGraceSeconds > 0) reaper.start();
  const mover =
    fallbackStore === undefined
      ? undefined
      : createBlobMover({
          blobs: createPostgresFallbackBlobs(pool),
          primary: s3Store,
          fallback: fallbackStore,
          execute: (command, call) => executor.execute(command, call),
          intervalMs: config.blobFallback.moverIntervalMs,
          logger: logger.child({ component: 'blob-mover' }),
        });
  mover?.start();
  const references = createPostgresBlobReferences(pool);
  const orphanLogger = logger.child({ component: 'orphan-sweep' });
  const orphanSweep = createPeriodic(
    async () => {
      const reports = await sweepAllOrphans({
        homes: { s3: s3Store, file: fallbackStore },
        references,
        graceMs: config.orphans.graceMs,
        now: new Date(),
        dryRun: false,
      });
      for (const report of reports) {
        if (report.orphans.length > 0) {
          orphanLogger.info('orphaned blobs deleted', {
            store: report.home,
            deleted: report.orphans.length,
            bytes: report.bytes,
            examined: report.examined,
          });
        }
      }
    },
    config.orphans.intervalMs,
    (err) => orphanLogger.warn('orphan sweep failed; the next one retries', { err }),
  );
  if (config.orphans.intervalMs > 0) orphanSweep.start();
  // Retention, on its own small pool of the owner's role: the service's role may delete nothing.
  let retention: ReturnType<typeof createPeriodic> | undefined;
  if (config.retention.intervalMs > 0) {
    const ownerPool = createPool({
      url: config.migrationDatabaseUrl,
      applicationName: 'crucible-retention',
      poolSize: 2,
      session: config.postgres,
    });
    resources.push({ name: 'postgres (retention)', close: () => ownerPool.end() });
    const retentionStore = createPostgresRetentionStore(ownerPool);
    const retentionLogger = logger.child({ component: 'retention' });
    retention = createPeriodic(
      async () => {
        const report = await retentionStore.exclusively(() =>
          runRetention({
            store: retentionStore,
            blobs: s3Store,
            policy: config.retention,
            now: new Date(),
            dryRun: false,
            logger: retentionLogger,
          }),
        );
        if (report === undefined) return retentionLogger.debug('another instance is running retention');
        metrics.retentionRan(report);
        retentionLogger.info('retention run ended', { ...report });
      },
      config.retention.intervalMs,
      (err) => retentionLogger.warn('retention run failed; the next one resumes it', { err }),
    );
    retention.start();
  }
  // Expired direct uploads are aborted within a minute (or half their expiry) of expiring.
  const uploadExpiry = createPeriodic(
    () => uploads.abortExpired(),
    Math.min(60_000, (config.outputUrls.uploadExpirySeconds * 1000) / 2),
    (err) => logger.warn('aborting expired uploads failed; the next pass retries', { err }),
  );
  uploadExpiry.start();

  onShutdownSignal((signal) => {
    logger.info('shutting down', { signal });
    // First, so that no failure is written while the server drains and the pool closes.
    void Promise.all([reaper.stop(), mover?.stop(), orphanSweep.stop(), retention?.stop(), uploadExpiry.stop()])
      .then(() => server.shutdown(config.shutdownGraceMs))
      .then(() => closeAll(resources, logger))
      .then(() => {
        logger.info('stopped');
        process.exit(0);
      });
  });
}

main().catch(exitOnFailure);
