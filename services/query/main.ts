import {
  createMetricsRegistry,
  redisErrorCounter,
  s3RequestObserver,
  serveMetrics,
  watchPostgresPool,
} from '../../shared/metrics';
import type { RedisOptions } from 'ioredis';
import { loadConfig, settingsHelp } from '../../shared/config';
import { createLogger, type Logger } from '../../shared/logging';
import { createPool } from '../../shared/postgres';
import { createRedisClient, redisTargetOf, type RedisClient, type RedisTarget } from '../../shared/redis';
import {
  closeAll,
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
import { createQueryService } from './query-service';

const SUMMARY = `crucible-storage query service (gRPC crucible.storage.v1.EvaluationQueryService)

Keeps read models in Redis from the command side's event log in PostgreSQL and serves lookups,
lists, outputs and resumable live streams from them. NOT_SERVING until caught up.`;

/**
 * Composition root of the query service: reads the environment, creates every connection,
 * runs the service until SIGTERM/SIGINT, then closes everything in reverse order (as the
 * command service's main.ts does).
 */
async function main(): Promise<void> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(helpText(SUMMARY, settingsHelp()));
    return;
  }
  const config = loadConfig(process.env);
  const logger = createLogger(config.logLevel, { service: 'query' });
  const resources: Closeable[] = [];
  // First: a key or certificate that does not read stops the start before any connection.
  const access = await createServerAccess(config, logger);
  onReloadSignal(() => access.reload(), logger);

  const pool = createPool(
    {
      url: config.queryDatabaseUrl,
      readOnly: true,
      applicationName: 'crucible-query',
      poolSize: 10,
      session: config.postgres,
    },
    (err) => logger.warn('an idle PostgreSQL connection failed; it is replaced on next use', { err: err.message }),
  );
  resources.push({ name: 'postgres', close: () => pool.end() });
  const registry = createMetricsRegistry('query');
  watchPostgresPool(registry, pool);
  const redisError = redisErrorCounter(registry);
  const target = redisTargetOf(config);
  const connectRedis = (options: RedisOptions): RedisClient => connectRedisCounted(target, options, logger, redisError);
  await retryAtStartup('connecting to PostgreSQL', () => pool.query('SELECT 1'), logger);
  // Four Redis connections, each for one kind of work: reads and the projection (each its own,
  // so that a large replay never holds a projection step behind it) fail fast when Redis is
  // down so calls get UNAVAILABLE and steps retry; the subscriber can run nothing but pub/sub;
  // the blocking one is held by XREAD BLOCK and waits out an outage.
  const redis = connectRedis({ connectionName: 'crucible-query', maxRetriesPerRequest: 1 });
  resources.push({ name: 'redis', close: () => closeRedis(redis) });
  const projection = connectRedis({
    connectionName: 'crucible-query-projection',
    maxRetriesPerRequest: 1,
  });
  resources.push({ name: 'redis projection', close: () => closeRedis(projection) });
  const subscriber = connectRedis({ connectionName: 'crucible-query-pubsub' });
  resources.push({ name: 'redis pub/sub', close: () => closeRedis(subscriber) });
  const blocking = connectRedis({ connectionName: 'crucible-query-tail', maxRetriesPerRequest: null });
  resources.push({ name: 'redis tail', close: () => Promise.resolve(blocking.disconnect()) });
  const s3 = createS3Client(config.s3, logger);
  observeS3Requests(s3, s3RequestObserver(registry));
  resources.push({ name: 's3', close: () => Promise.resolve(s3.destroy()) });
  const s3Public =
    config.s3.publicEndpoint !== '' ? createS3Client({ ...config.s3, endpoint: config.s3.publicEndpoint }, logger) : s3;
  if (s3Public !== s3)
    resources.push({ name: 's3 (public endpoint)', close: () => Promise.resolve(s3Public.destroy()) });

  const connections = { access, pool, redis, projection, subscriber, blocking, s3, s3Public };
  const tracing = createTracing({ service: 'query', ...config.tracing });
  resources.push({ name: 'tracing', close: () => tracing.shutdown() });
  const service = createQueryService(config, connections, logger, { registry, tracing });
  // Before the gRPC port: whoever waits for "listening" finds the metrics served.
  const metricsEndpoint =
    config.queryMetricsPort === undefined
      ? undefined
      : await serveMetrics({ registry, host: config.host, port: config.queryMetricsPort, logger });
  if (metricsEndpoint !== undefined) resources.push({ name: 'metrics', close: () => metricsEndpoint.close() });
  const port = await service.start(config.host, config.queryPort);
  // Always printed, whatever LOG_LEVEL says: process supervisors and tests wait for this line.
  createLogger('info', { service: 'query' }).info('listening', {
    host: config.host,
    port,
    ...(metricsEndpoint !== undefined ? { metricsPort: metricsEndpoint.port } : {}),
  });

  onShutdownSignal((signal) => {
    logger.info('shutting down', { signal, graceMs: config.shutdownGraceMs });
    void service
      .shutdown(config.shutdownGraceMs)
      .then(() => closeAll(resources, logger))
      .then(() => {
        logger.info('stopped');
        process.exit(0);
      });
  });
}

function connectRedisCounted(
  target: RedisTarget,
  options: RedisOptions,
  logger: Logger,
  counted: (connection: string) => void,
): RedisClient {
  const client = createRedisClient(target, options);
  let failing = false;
  const onError = (err: unknown): void => {
    counted(options.connectionName ?? 'unnamed');
    // ioredis reports every failed reconnect attempt; log the outage once, and its end.
    if (!failing) logger.warn('redis connection failed; reconnecting', { connection: options.connectionName, err });
    failing = true;
  };
  client.on('error', onError);
  // A cluster reports a node's failure as "node error", the whole cluster's as "error".
  client.on('node error', onError);
  client.on('ready', () => {
    if (failing) logger.info('redis connection back', { connection: options.connectionName });
    failing = false;
  });
  return client;
}

async function closeRedis(client: RedisClient): Promise<void> {
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, 1000).unref());
  await Promise.race([
    client.quit().then(
      () => undefined,
      () => undefined,
    ),
    timeout,
  ]);
  client.disconnect();
}

main().catch(exitOnFailure);
