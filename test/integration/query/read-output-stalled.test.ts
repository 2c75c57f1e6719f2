import { openAccess } from '../../../shared/grpc';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { credentials, status as grpcStatus, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createRedisClient, redisTargetOf, type RedisClient } from '../../../shared/redis';
import { loadConfig } from '../../../shared/config';
import {
  EvaluationQueryServiceClient,
  OutputKind,
  type ReadOutputResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { silentLogger } from '../../../shared/logging';
import { createPool } from '../../../shared/postgres';
import { createS3Client } from '../../../shared/s3';
import { CHUNK_BYTES, CLIENT_WAIT_MS } from '../../../services/query/handlers/read-output';
import { createQueryService } from '../../../services/query/query-service';
import { expectError } from '../../support/clients';
import { createQueryHarness, type QueryHarness } from './harness';

/** The query service's S3 pool in this spec: small, so that a few stalled readers fill it. */
const MAX_SOCKETS = 4;
/**
 * Larger than all a stalled reader's stream can hold on the way (grpc-js's 16 queued messages
 * on each side, 16 MiB, and the sockets' buffers): its download cannot finish while it stalls.
 */
const LARGE = 32 * 1024 * 1024;

/**
 * A TCP proxy in front of the S3 server that tells which downloads lost their connection: each
 * connection is known by the path of the last request it carried.
 */
interface S3Proxy {
  readonly endpoint: string;
  /** Resolves once `count` connections whose last request named `key` have closed. */
  closed(key: string, count: number): Promise<void>;
  close(): Promise<void>;
}

async function startS3Proxy(target: URL): Promise<S3Proxy> {
  const closedPaths: string[] = [];
  const waiters = new Set<() => void>();
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    let path = '';
    client.on('data', (data: Buffer) => {
      const line = /^[A-Z]+ (\S+) HTTP\//.exec(data.subarray(0, 2048).toString('latin1'));
      if (line !== null) path = line[1] ?? '';
    });
    // Piped both ways: a client that stops reading holds the server back, as without the proxy;
    // a server that closes an idle connection ends the client's once its bytes are through.
    client.pipe(upstream);
    upstream.pipe(client);
    upstream.on('error', () => client.destroy());
    client.on('error', () => undefined);
    client.on('close', () => {
      upstream.destroy();
      closedPaths.push(path);
      for (const waiter of [...waiters]) waiter();
    });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the proxy has no port');
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    closed(key, count) {
      const enough = (): boolean => closedPaths.filter((p) => p.includes(key)).length >= count;
      if (enough()) return Promise.resolve();
      return new Promise((resolve) => {
        const check = (): void => {
          if (!enough()) return;
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
      });
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A ReadOutput client that takes the first message and then stops reading (grpc-js stops
 * reading the HTTP/2 stream once 16 messages wait), until `resume()`; with `stall: false` it
 * reads all at once. What it receives is checked as it comes: contiguous offsets, and the bytes
 * hashed (and kept with `keep`).
 */
interface StalledReader {
  /** Resolves with the first message's size once it has arrived (the reader then stalls). */
  readonly first: Promise<number>;
  resume(): void;
  /** The SHA-256 of every byte received, and how many, once the stream ends; rejects with its error. */
  readonly done: Promise<{ sha256: string; bytes: number }>;
  /** Bytes received so far, in order (with `keep`). */
  readonly received: () => Buffer;
}

function stalledReader(
  stream: ClientReadableStream<ReadOutputResponse>,
  options: { keep?: boolean; stall?: boolean } = {},
): StalledReader {
  const hash = createHash('sha256');
  const kept: Buffer[] = [];
  let offset = 0;
  let resolveFirst: (size: number) => void = () => undefined;
  let rejectFirst: (err: Error) => void = () => undefined;
  const first = new Promise<number>((resolve, reject) => {
    resolveFirst = resolve;
    rejectFirst = reject;
  });
  const done = new Promise<{ sha256: string; bytes: number }>((resolve, reject) => {
    stream.on('data', (message: ReadOutputResponse) => {
      if (message.offset !== String(offset)) {
        stream.cancel();
        reject(new Error(`a chunk at offset ${message.offset}, expected ${offset}`));
        return;
      }
      hash.update(message.chunk);
      if (options.keep === true) kept.push(Buffer.from(message.chunk));
      if (offset === 0) {
        if (options.stall !== false) stream.pause();
        resolveFirst(message.chunk.length);
      }
      offset += message.chunk.length;
    });
    stream.on('error', (err: ServiceError) => {
      rejectFirst(err);
      reject(err);
    });
    stream.on('end', () => resolve({ sha256: hash.digest('hex'), bytes: offset }));
  });
  done.catch(() => undefined);
  first.catch(() => undefined);
  return {
    first,
    resume: () => stream.resume(),
    done,
    received: () => Buffer.concat(kept),
  };
}

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

describe('ReadOutput: readers that stall do not hold the S3 connection pool', function () {
  this.timeout(30_000);
  let h: QueryHarness;
  let proxy: S3Proxy;
  let address: string;
  const closers: (() => Promise<void> | void)[] = [];
  let connections = 0;

  before(async () => {
    h = await createQueryHarness();
    proxy = await startS3Proxy(new URL(h.config.s3.endpoint));
    closers.push(() => proxy.close());
    // The service as main.ts composes it, but with an S3 pool of MAX_SOCKETS, through the proxy.
    const config = loadConfig({ ...h.env.env, S3_ENDPOINT: proxy.endpoint });
    const pool = createPool({
      url: config.queryDatabaseUrl,
      readOnly: true,
      applicationName: 'crucible-query-it',
      poolSize: 4,
    });
    const redis = (options: { maxRetriesPerRequest?: number | null } = {}): RedisClient => {
      const client = createRedisClient(redisTargetOf(config), options).on('error', () => undefined);
      closers.push(() => client.disconnect());
      return client;
    };
    const s3 = createS3Client(config.s3, undefined, { maxSockets: MAX_SOCKETS });
    const service = createQueryService(
      config,
      {
        access: openAccess(silentLogger),
        pool,
        redis: redis({ maxRetriesPerRequest: 1 }),
        projection: redis({ maxRetriesPerRequest: 1 }),
        subscriber: redis(),
        blocking: redis({ maxRetriesPerRequest: null }),
        s3,
      },
      silentLogger,
    );
    closers.push(
      () => pool.end(),
      () => s3.destroy(),
      () => service.shutdown(1000),
    );
    address = `127.0.0.1:${await service.start('127.0.0.1', 0)}`;
    await service.projector.whenCaughtUp();
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    await h.close();
  });

  /** Each reader on a connection of its own: a stalled stream must not hold back another's HTTP/2 window. */
  function connection(): EvaluationQueryServiceClient {
    const client = new EvaluationQueryServiceClient(address, credentials.createInsecure(), {
      'grpc.channel_id': (connections += 1),
    });
    closers.push(() => client.close());
    return client;
  }

  async function storeBody(evalId: string, body: Buffer): Promise<string> {
    const key = `outputs/${evalId}/output`;
    await h.s3.send(new PutObjectCommand({ Bucket: h.config.s3.bucket, Key: key, Body: body }));
    await h.writer.submit(evalId);
    await h.writer.putBody(evalId, 'output', { s3Key: key, size: body.length });
    return key;
  }

  it('serves a fresh read while more readers than sockets stall, then gives every stalled reader every byte once', async () => {
    const stalledBody = randomBytes(LARGE);
    const freshBody = randomBytes(LARGE);
    const stalledKey = await storeBody('stalled', stalledBody);
    await storeBody('fresh', freshBody);

    // MAX_SOCKETS readers take every socket of the pool; two more wait in its queue.
    const readers = Array.from({ length: MAX_SOCKETS }, () =>
      stalledReader(
        connection().readOutput({ evalId: 'stalled', kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' }),
      ),
    );
    for (const reader of readers) expect(await reader.first).to.equal(CHUNK_BYTES);
    readers.push(
      ...Array.from({ length: 2 }, () =>
        stalledReader(
          connection().readOutput({ evalId: 'stalled', kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' }),
        ),
      ),
    );

    const started = Date.now();
    const deadline = new Date(started + CLIENT_WAIT_MS + 8_000);
    const fresh = stalledReader(
      connection().readOutput(
        { evalId: 'fresh', kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' },
        { deadline },
      ),
      { stall: false },
    );
    expect(await fresh.done).to.deep.equal({ sha256: sha256(freshBody), bytes: freshBody.length });

    // The stalled downloads gave their sockets back (the proxy saw them close), the queued
    // readers got their first message, and nobody resumed reading yet.
    for (const reader of readers) expect(await reader.first).to.equal(CHUNK_BYTES);
    await proxy.closed(stalledKey, MAX_SOCKETS);

    for (const reader of readers) reader.resume();
    for (const reader of readers)
      expect(await reader.done).to.deep.equal({ sha256: sha256(stalledBody), bytes: stalledBody.length });
  });

  it('refuses to splice an object replaced while its reader stalled: UNAVAILABLE, no byte of the new one', async () => {
    const before = randomBytes(LARGE);
    const key = await storeBody('replaced', before);
    const reader = stalledReader(
      connection().readOutput({ evalId: 'replaced', kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' }),
      {
        keep: true,
      },
    );
    await reader.first;
    await proxy.closed(key, 1); // the download gave up its socket while the reader stalled
    await h.s3.send(new PutObjectCommand({ Bucket: h.config.s3.bucket, Key: key, Body: randomBytes(LARGE) }));
    reader.resume();

    const err = await expectError(reader.done);
    expect(err.code).to.equal(grpcStatus.UNAVAILABLE);
    expect(err.details).to.contain('replaced');
    const received = reader.received();
    expect(received.length).to.be.above(0);
    expect(received.length % CHUNK_BYTES).to.equal(0);
    expect(received.equals(before.subarray(0, received.length))).to.equal(true);
  });
});
