import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { formatHostPort, loadConfig, type Config } from '../../shared/config';
import { ensureServiceLogins, runMigrations, serviceDatabaseUrls } from '../../shared/postgres';
import { createS3Client } from '../../shared/s3';
import { createRedisClient, redisTargetOf } from '../../shared/redis';
import { deleteKeys } from './redis-keys';

/**
 * Per-spec isolation on the shared test servers: each spec file gets its own database, Redis
 * key prefix and S3 bucket, so specs never see each other's data and can run in any order.
 *
 * The servers come from the environment `make test` sets up (DATABASE_URL's server, REDIS_URL,
 * S3_ENDPOINT); the defaults are the local ones.
 */
export interface TestEnvironment {
  readonly config: Config;
  /**
   * Environment variables that make a service process use this isolated environment, as its
   * login of least privilege (crucible_command, crucible_query) unless the overrides name URLs;
   * `config` keeps the owner's URL, for the spec's own set-up and inspection.
   */
  readonly env: Record<string, string>;
  close(): Promise<void>;
}

function uniqueName(prefix: string): string {
  return `${prefix}${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

export interface TestEnvironmentOptions {
  /** Extra configuration keys (e.g. smaller limits). */
  readonly overrides?: Record<string, string>;
  /** Skip creating a database (unit-level specs that only need Redis). */
  readonly withoutDatabase?: boolean;
}

export async function createTestEnvironment(options: TestEnvironmentOptions = {}): Promise<TestEnvironment> {
  const base = loadConfig({ ...process.env, ENVIRONMENT: 'test' });
  const database = uniqueName('crucible_t_');
  const keyPrefix = uniqueName('t');
  const bucket = uniqueName('t-').toLowerCase();
  const admin = new Client({ connectionString: withDatabase(base.databaseUrl, 'postgres') });
  const fallbackDir = mkdtempSync(join(tmpdir(), 'crucible-fallback-'));
  const env: Record<string, string> = {
    ENVIRONMENT: 'test',
    DATABASE_URL: withDatabase(base.databaseUrl, database),
    REDIS_URL: base.redisUrl,
    // The suites run against one Redis and against a cluster (tools/stack/suites.ts).
    ...(base.redisClusterNodes.length > 0
      ? { REDIS_CLUSTER_NODES: base.redisClusterNodes.map(formatHostPort).join(',') }
      : {}),
    REDIS_KEY_PREFIX: keyPrefix,
    S3_ENDPOINT: base.s3.endpoint,
    S3_BUCKET: bucket,
    S3_ACCESS_KEY_ID: base.s3.accessKeyId,
    S3_SECRET_ACCESS_KEY: base.s3.secretAccessKey,
    S3_FORCE_PATH_STYLE: String(base.s3.forcePathStyle),
    S3_CHECKSUM_MODE: base.s3.checksumMode,
    COMMAND_PORT: '0',
    QUERY_PORT: '0',
    // A fallback store of its own: what one spec writes there is no other spec's.
    BLOB_FALLBACK_DIR: fallbackDir,
    ...options.overrides,
  };
  const config = loadConfig(env);

  if (options.withoutDatabase !== true) {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    await runMigrations({ url: config.databaseUrl, applicationName: 'crucible-test-setup' });
    await ensureServiceLogins(admin, config.databaseUrl);
  }
  const s3 = createS3Client(config.s3);
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));

  // The services as their logins; URLs the overrides name stay as they are.
  const logins =
    options.withoutDatabase === true || options.overrides?.DATABASE_URL !== undefined
      ? {}
      : serviceDatabaseUrls(config.databaseUrl);
  return {
    config,
    env: { ...env, ...logins, ...options.overrides },
    async close() {
      await deleteRedisKeys(config, keyPrefix);
      await emptyAndDeleteBucket(s3, bucket);
      s3.destroy();
      rmSync(fallbackDir, { recursive: true, force: true });
      if (options.withoutDatabase !== true) {
        await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
        await admin.end();
      }
    },
  };
}

async function deleteRedisKeys(config: Config, prefix: string): Promise<void> {
  const redis = createRedisClient(redisTargetOf(config));
  try {
    await deleteKeys(redis, `${prefix}:*`);
  } finally {
    redis.disconnect();
  }
}

async function emptyAndDeleteBucket(s3: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    const keys = (listed.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [{ Key: o.Key }]));
    if (keys.length === 0) break;
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys } }));
  }
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
}
