import { formatHostPort, type Config } from '../../shared/config';
import { serviceDatabaseUrls } from '../../shared/postgres';
import type { RedisUser } from '../../shared/redis';
import type { StackContext } from './context';
import { applyMigrations, ensureDatabase, ensureLogins, ensurePostgres } from './postgres';
import { ensureRedis } from './redis';
import { ensureRedisCluster } from './redis-cluster';
import { ensureS3 } from './s3';

/**
 * Makes PostgreSQL, Redis and S3 answer at the configured addresses (starting local ones
 * where nothing answers), then creates the database and applies the migrations.
 */
export async function ensureDependencies(
  config: Config,
  ctx: StackContext,
  redisUsers: readonly RedisUser[] = [],
): Promise<void> {
  await ensurePostgres(config.databaseUrl, ctx);
  ctx.signal.throwIfAborted();
  if (config.redisClusterNodes.length > 0)
    await ensureRedisCluster(config.redisUrl, config.redisClusterNodes, ctx, redisUsers);
  else await ensureRedis(config.redisUrl, ctx, redisUsers);
  ctx.signal.throwIfAborted();
  await ensureS3(config.s3, ctx);
  ctx.signal.throwIfAborted();
  await prepareDatabase(config, ctx);
}

export async function prepareDatabase(config: Config, ctx: Pick<StackContext, 'progress'>): Promise<void> {
  await ensureDatabase(config.databaseUrl, ctx.progress);
  await applyMigrations(config.databaseUrl, ctx.progress);
  await ensureLogins(config.databaseUrl, ctx.progress);
}

/**
 * The environment of processes run against these dependencies (services, test suites): the
 * caller's, with the resolved addresses spelled out so that a child with other defaults
 * (e.g. ENVIRONMENT=test) still finds the same servers.
 */
export function dependencyEnv(config: Config): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ENVIRONMENT: config.environment,
    DATABASE_URL: config.databaseUrl,
    REDIS_URL: config.redisUrl,
    ...(config.redisClusterNodes.length > 0
      ? { REDIS_CLUSTER_NODES: config.redisClusterNodes.map(formatHostPort).join(',') }
      : {}),
    S3_ENDPOINT: config.s3.endpoint,
    S3_BUCKET: config.s3.bucket,
    S3_REGION: config.s3.region,
    S3_ACCESS_KEY_ID: config.s3.accessKeyId,
    S3_SECRET_ACCESS_KEY: config.s3.secretAccessKey,
    S3_FORCE_PATH_STYLE: String(config.s3.forcePathStyle),
    S3_CHECKSUM_MODE: config.s3.checksumMode,
  };
}

/**
 * The environment of the services `make up` runs: each as its login of least privilege
 * (docs/security.md), the command service migrating as DATABASE_URL's user. A deployment that
 * names its own QUERY_DATABASE_URL or MIGRATION_DATABASE_URL keeps its URLs.
 */
export function serviceEnv(config: Config): NodeJS.ProcessEnv {
  const env = dependencyEnv(config);
  if (config.queryDatabaseUrl !== config.databaseUrl || config.migrationDatabaseUrl !== config.databaseUrl) {
    return { ...env, QUERY_DATABASE_URL: config.queryDatabaseUrl, MIGRATION_DATABASE_URL: config.migrationDatabaseUrl };
  }
  return { ...env, ...serviceDatabaseUrls(config.databaseUrl) };
}
