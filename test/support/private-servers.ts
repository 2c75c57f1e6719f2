import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { loadConfig, type Config } from '../../shared/config';
import { createS3Client } from '../../shared/s3';
import type { StackContext } from '../../tools/stack/context';
import { applyMigrations, ensureDatabase, ensurePostgres } from '../../tools/stack/postgres';
import { createResourceStack, type ResourceStack } from '../../tools/stack/processes';
import { createProgress, type Progress } from '../../tools/stack/progress';
import { ensureRedis } from '../../tools/stack/redis';
import { ensureS3 } from '../../tools/stack/s3';

/**
 * Servers that fault tests may stop, kill and restart: a PostgreSQL cluster and a Redis of
 * their own, on free ports, with their data under a temporary folder. They are started with
 * the stack tool's code (tools/stack: initdb/pg_ctl as the `postgres` OS user when root,
 * redis-server without persistence, each under its supervisor), never touch the shared
 * servers, and are stopped by whoever started them (the spec's `after` hook: `close`).
 */

/** A port nothing listens on right now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The stack tool's context over `dataDir`, quiet: its progress lines are kept for error messages. */
function quietContext(dataDir: string, resources: ResourceStack, lines: string[]): StackContext {
  const progress: Progress = createProgress((line) => void lines.push(line));
  return { progress, resources, projectRoot: dataDir, dataDir, signal: new AbortController().signal };
}

/** One server's life: start adds its resources to a fresh stack, stop stops exactly those. */
function lifecycle(
  dataDir: string,
  ensure: (ctx: StackContext) => Promise<void>,
): { start(): Promise<void>; stop(): Promise<void>; readonly running: boolean; log(): string } {
  const lines: string[] = [];
  let resources: ResourceStack | undefined;
  return {
    async start() {
      if (resources !== undefined) throw new Error('already running');
      const started = createResourceStack();
      try {
        await ensure(quietContext(dataDir, started, lines));
      } catch (err) {
        await started.stopAll(createProgress((line) => void lines.push(line)));
        throw err;
      }
      // The stack tool uses a server that already answers; a test must never stop one it did
      // not start (the port was taken between picking it and starting on it).
      if (started.names.length === 0)
        throw new Error(`a server that this test did not start answers there:\n${lines.join('')}`);
      resources = started;
    },
    async stop() {
      const started = resources;
      resources = undefined;
      await started?.stopAll(createProgress((line) => void lines.push(line)));
    },
    get running() {
      return resources !== undefined;
    },
    log: () => lines.join(''),
  };
}

export interface PrivatePostgres {
  readonly port: number;
  /** Superuser URL of `database` on this cluster. */
  urlOf(database: string): string;
  /** `pg_ctl stop -m fast`: sessions are ended, the server is gone until `start`. */
  stop(): Promise<void>;
  /** Starts the cluster again on the same port and data folder. */
  start(): Promise<void>;
  readonly running: boolean;
  /** Stops the server (if running) and deletes its data folder. */
  close(): Promise<void>;
}

/** A private server's life on its port and data folder (the parts every kind has). */
interface PrivateServer {
  readonly port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
  readonly running: boolean;
  /** Stops the server (if running) and deletes its data folder. */
  close(): Promise<void>;
}

/**
 * Starts `what` with the stack tool's `ensure` on a free port, its data in a new temporary
 * folder (removed again when the start fails, and by `close`).
 */
async function startPrivateServer(
  what: string,
  folderPrefix: string,
  ensure: (port: number, ctx: StackContext) => Promise<void>,
): Promise<PrivateServer> {
  const dataDir = mkdtempSync(join(tmpdir(), folderPrefix));
  const port = await freePort();
  const server = lifecycle(dataDir, (ctx) => ensure(port, ctx));
  try {
    await server.start();
  } catch (err) {
    rmSync(dataDir, { recursive: true, force: true });
    throw new Error(`could not start a private ${what}: ${String(err)}\n${server.log()}`, { cause: err });
  }
  return {
    port,
    stop: () => server.stop(),
    start: () => server.start(),
    get running() {
      return server.running;
    },
    async close() {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** initdb + pg_ctl start of a new cluster on a free port (trust auth on 127.0.0.1, no Unix socket). */
export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const urlAt = (port: number, database: string): string => `postgres://postgres@127.0.0.1:${port}/${database}`;
  const server = await startPrivateServer('PostgreSQL', 'crucible-fault-pg-', (port, ctx) =>
    ensurePostgres(urlAt(port, 'postgres'), ctx),
  );
  return Object.assign(server, { urlOf: (database: string) => urlAt(server.port, database) });
}

export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  /** SIGTERM; there is no persistence, so the next `start` comes back empty. */
  stop(): Promise<void>;
  /** Starts redis-server again on the same port (empty). */
  start(): Promise<void>;
  readonly running: boolean;
  close(): Promise<void>;
}

/** redis-server on a free port, without persistence. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const urlAt = (port: number): string => `redis://127.0.0.1:${port}/0`;
  const server = await startPrivateServer('Redis', 'crucible-fault-redis-', (port, ctx) =>
    ensureRedis(urlAt(port), ctx),
  );
  return Object.assign(server, { url: urlAt(server.port) });
}

export interface PrivateS3 {
  readonly endpoint: string;
  /** Closes the server: requests are refused until `start`. Its files stay. */
  stop(): Promise<void>;
  /** Starts s3rver again on the same port and files. */
  start(): Promise<void>;
  readonly running: boolean;
  close(): Promise<void>;
}

/** s3rver of its own on a free port, with its files in a temporary folder. */
export async function startPrivateS3(config: Config['s3']): Promise<PrivateS3> {
  const endpointAt = (port: number): string => `http://127.0.0.1:${port}`;
  const server = await startPrivateServer('s3rver', 'crucible-fault-own-s3-', (port, ctx) =>
    ensureS3({ ...config, endpoint: endpointAt(port) }, ctx),
  );
  return Object.assign(server, { endpoint: endpointAt(server.port) });
}

export interface PrivateStack {
  readonly postgres: PrivatePostgres;
  readonly redis: PrivateRedis;
  /** With `ownS3`: the stack's S3 server, which a test may stop and start. */
  readonly s3?: PrivateS3;
  /** Superuser URL of this stack's database on the private cluster. */
  readonly databaseUrl: string;
  readonly config: Config;
  /** Environment of a service or CLI process using this stack (ports 0: free ones). */
  readonly env: Record<string, string>;
  close(): Promise<void>;
}

export interface PrivateStackOptions {
  /** Extra configuration keys for the services (e.g. STREAM_BUFFER_LIMIT). */
  readonly overrides?: Record<string, string>;
  /** An S3 server of the stack's own (s3rver), not the shared one at S3_ENDPOINT. */
  readonly ownS3?: boolean;
}

/**
 * A private PostgreSQL and Redis, a migrated database, and a bucket of its own on the S3 API
 * at S3_ENDPOINT (s3rver in this process, with its files in the temp folder, when nothing
 * answers there).
 */
export async function startPrivateStack(options: PrivateStackOptions = {}): Promise<PrivateStack> {
  const base = loadConfig({ ...process.env, ENVIRONMENT: 'test' });
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async (): Promise<void> => {
    for (let close = closers.pop(); close !== undefined; close = closers.pop()) await close();
  };
  try {
    const postgres = await startPrivatePostgres();
    closers.push(() => postgres.close());
    const redis = await startPrivateRedis();
    closers.push(() => redis.close());

    const databaseUrl = postgres.urlOf('crucible');
    const lines: string[] = [];
    const s3Dir = mkdtempSync(join(tmpdir(), 'crucible-fault-s3-'));
    closers.push(() => Promise.resolve(rmSync(s3Dir, { recursive: true, force: true })));
    const s3Resources = createResourceStack();
    const ctx = quietContext(s3Dir, s3Resources, lines);
    closers.push(() => s3Resources.stopAll(ctx.progress));
    await ensureDatabase(databaseUrl, ctx.progress);
    await applyMigrations(databaseUrl, ctx.progress);

    const bucket = `fault-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
    let ownS3: PrivateS3 | undefined;
    if (options.ownS3 === true) {
      ownS3 = await startPrivateS3({ ...base.s3, bucket });
      const started = ownS3;
      closers.push(() => started.close());
    }
    const env: Record<string, string> = {
      ENVIRONMENT: 'test',
      DATABASE_URL: databaseUrl,
      REDIS_URL: redis.url,
      // Its own Redis, whatever the suite runs against (a cluster: tools/stack/suites.ts).
      REDIS_CLUSTER_NODES: '',
      REDIS_KEY_PREFIX: 'fault',
      S3_ENDPOINT: ownS3?.endpoint ?? base.s3.endpoint,
      S3_BUCKET: bucket,
      S3_ACCESS_KEY_ID: base.s3.accessKeyId,
      S3_SECRET_ACCESS_KEY: base.s3.secretAccessKey,
      S3_FORCE_PATH_STYLE: String(base.s3.forcePathStyle),
      S3_CHECKSUM_MODE: base.s3.checksumMode,
      COMMAND_PORT: '0',
      QUERY_PORT: '0',
      ...options.overrides,
    };
    const config = loadConfig(env);
    // Creates the bucket; starts s3rver here first if nothing answers at S3_ENDPOINT.
    await ensureS3(config.s3, ctx);
    const s3 = createS3Client(config.s3);
    closers.push(async () => {
      await emptyAndDeleteBucket(s3, bucket).catch(() => undefined);
      s3.destroy();
    });
    return {
      postgres,
      redis,
      ...(ownS3 !== undefined ? { s3: ownS3 } : {}),
      databaseUrl,
      config,
      env,
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
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
