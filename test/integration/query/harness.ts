import { openAccess } from '../../../shared/grpc';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListBucketsCommand } from '@aws-sdk/client-s3';
import { credentials } from '@grpc/grpc-js';
import { createRedisClient, redisTargetOf, type RedisClient } from '../../../shared/redis';
import { createS3rver } from '../../../tools/stack/local-s3';
import { Client, Pool } from 'pg';
import type { S3Client } from '@aws-sdk/client-s3';
import { loadConfig, type Config } from '../../../shared/config';
import { EvaluationQueryServiceClient } from '../../../shared/generated/crucible/storage/v1/query_service';
import { createLogger, silentLogger, type Logger } from '../../../shared/logging';
import { createPool } from '../../../shared/postgres';
import { createS3Client } from '../../../shared/s3';
import { createQueryService, type QueryService, type QueryServiceOptions } from '../../../services/query/query-service';
import { checkConsistency } from '../../../services/query/projection/consistency-check';
import { createPostgresEvaluationSource } from '../../../services/query/postgres/event-log';
import type { KeyLayout } from '../../../services/query/read-models/keys';
import { createTestEnvironment, type TestEnvironment } from '../../support/environment';
import { deleteKeys } from '../../support/redis-keys';
import { createEventWriter, type EventWriter } from './event-writer';

/** One query service replica running in this process, and a client for it. */
export interface Replica {
  readonly service: QueryService;
  readonly client: EvaluationQueryServiceClient;
  readonly address: string;
  readonly redis: RedisClient;
  readonly blocking: RedisClient;
  readonly subscriber: RedisClient;
  readonly pool: Pool;
  /** Shuts the service down and closes its connections (idempotent). */
  close(): Promise<void>;
}

export interface QueryHarness {
  readonly env: TestEnvironment;
  readonly config: Config;
  /** Inspection / event-writing connection to the spec's database. */
  readonly sql: Client;
  /** Inspection connection to Redis. */
  readonly redis: RedisClient;
  readonly writer: EventWriter;
  readonly s3: S3Client;
  /** Starts a replica over the spec's database and prefix (config keys may be overridden). */
  startReplica(options?: {
    overrides?: Record<string, string>;
    service?: QueryServiceOptions;
    logger?: Logger;
  }): Promise<Replica>;
  /** Deletes every Redis key of the spec's prefix (a flush of "our" Redis). */
  flushReadModels(): Promise<void>;
  /**
   * The consistency checker's differences between the read models (`layout`) and the log, read
   * as the CLI reads them: no replica runs for it (one would repair what a spec broke).
   */
  differences(layout: KeyLayout): Promise<string[]>;
  close(): Promise<void>;
}

export async function createQueryHarness(overrides: Record<string, string> = {}): Promise<QueryHarness> {
  await acquireS3();
  const env = await createTestEnvironment({ overrides });
  const closers: (() => Promise<void>)[] = [() => env.close(), releaseS3];
  const replicas: Replica[] = [];
  const close = async (): Promise<void> => {
    for (const replica of replicas.splice(0)) await replica.close();
    for (const closer of closers.reverse()) await closer();
  };
  try {
    const sql = new Client({ connectionString: env.config.databaseUrl, application_name: 'crucible-query-it' });
    await sql.connect();
    closers.push(() => sql.end());
    const redis = createRedisClient(redisTargetOf(env.config), { maxRetriesPerRequest: 1 });
    closers.push(async () => {
      await deleteKeys(redis, `${env.config.redisKeyPrefix}*`);
      redis.disconnect();
    });
    const s3 = createS3Client(env.config.s3);
    closers.push(() => Promise.resolve(s3.destroy()));
    const writer = createEventWriter(sql, redis, env.config);

    return {
      env,
      config: env.config,
      sql,
      redis,
      writer,
      s3,
      async startReplica(options = {}) {
        const config = loadConfig({ ...env.env, ...options.overrides });
        const pool = createPool({
          url: config.queryDatabaseUrl,
          readOnly: true,
          applicationName: 'crucible-query-it',
          poolSize: 4,
        });
        const target = redisTargetOf(config);
        const quiet = (client: RedisClient): RedisClient => client.on('error', () => undefined);
        const replicaRedis = quiet(createRedisClient(target, { maxRetriesPerRequest: 1 }));
        const projection = quiet(createRedisClient(target, { maxRetriesPerRequest: 1 }));
        const subscriber = quiet(createRedisClient(target));
        const blocking = quiet(createRedisClient(target, { maxRetriesPerRequest: null }));
        const replicaS3 = createS3Client(config.s3);
        const service = createQueryService(
          config,
          {
            access: openAccess(silentLogger),
            pool,
            redis: replicaRedis,
            projection,
            subscriber,
            blocking,
            s3: replicaS3,
          },
          options.logger ??
            (process.env.QUERY_IT_LOG === '1' ? createLogger('debug', { replica: replicas.length }) : silentLogger),
          options.service,
        );
        const port = await service.start('127.0.0.1', 0);
        const address = `127.0.0.1:${port}`;
        const client = new EvaluationQueryServiceClient(address, credentials.createInsecure());
        let closed: Promise<void> | undefined;
        const replica: Replica = {
          service,
          client,
          address,
          redis: replicaRedis,
          blocking,
          subscriber,
          pool,
          close() {
            closed ??= (async () => {
              client.close();
              await service.shutdown(1000);
              replicaS3.destroy();
              blocking.disconnect();
              subscriber.disconnect();
              replicaRedis.disconnect();
              projection.disconnect();
              await pool.end();
            })();
            return closed;
          },
        };
        replicas.push(replica);
        return replica;
      },
      async flushReadModels() {
        await deleteKeys(redis, `${env.config.redisKeyPrefix}*`);
      },
      async differences(layout) {
        // As the services' own pools: pipelined (each tenant-scoped read is one round trip).
        const pool = createPool({ url: env.config.databaseUrl, poolSize: 2, applicationName: 'crucible-test-checker' });
        try {
          return (await checkConsistency({ source: createPostgresEvaluationSource(pool), redis, layout })).differences;
        } finally {
          await pool.end();
        }
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

// The specs need an S3 API for createTestEnvironment (its bucket). When none answers at the
// configured endpoint, one s3rver runs in this process while any spec holds it.
let s3Holders = 0;
let s3Server: { close(): Promise<void> } | undefined;
let s3Directory: string | undefined;
let s3Ready: Promise<void> | undefined;

async function acquireS3(): Promise<void> {
  s3Holders += 1;
  s3Ready ??= (async () => {
    const config = loadConfig({ ...process.env, ENVIRONMENT: 'test' });
    const probe = createS3Client(config.s3);
    try {
      await probe.send(new ListBucketsCommand({}));
      return;
    } catch {
      // nothing answers: start one below
    } finally {
      probe.destroy();
    }
    const url = new URL(config.s3.endpoint);
    s3Directory = mkdtempSync(join(tmpdir(), 'crucible-s3-'));
    const server = createS3rver({
      address: url.hostname,
      port: Number(url.port),
      silent: true,
      directory: s3Directory,
    });
    await server.run();
    s3Server = server;
  })();
  await s3Ready;
}

async function releaseS3(): Promise<void> {
  s3Holders -= 1;
  if (s3Holders > 0 || s3Server === undefined) return;
  const server = s3Server;
  s3Server = undefined;
  s3Ready = undefined;
  await server.close();
  if (s3Directory !== undefined) rmSync(s3Directory, { recursive: true, force: true });
}
