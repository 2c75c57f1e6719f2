import { createHash, randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { S3Client } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { createS3BlobStore, type BlobStore } from '../../../shared/blobs';
import { createS3Client } from '../../../shared/s3';
import { createTestEnvironment, type TestEnvironment } from '../../support/environment';

const sha = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** The names of the commands `client` sends from now on (s3rver cannot list open uploads). */
function recordCommands(client: S3Client): string[] {
  const names: string[] = [];
  client.middlewareStack.add(
    (next, context) => (args) => {
      names.push(String(context.commandName));
      return next(args);
    },
    { step: 'initialize', name: 'recordCommandNames' },
  );
  return names;
}

/** How many of each command. */
function counts(names: readonly string[]): Record<string, number> {
  const result: Record<string, number> = {};
  for (const name of names) result[name] = (result[name] ?? 0) + 1;
  return result;
}

/**
 * A TCP proxy in front of the S3 server that cuts the connection carrying the first request
 * for `partNumber=<part>` once some of its body has gone through: a connection dropped in the
 * middle of a part. Counts the requests for that part it saw.
 */
async function partDroppingProxy(
  target: URL,
  part: number,
): Promise<{ endpoint: string; seen(): number; close(): Promise<void> }> {
  const marker = `partNumber=${part}&`;
  let seen = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    let dropAfter: number | undefined;
    client.on('data', (data: Buffer) => {
      if (data.includes(marker)) {
        seen += 1;
        if (seen === 1) dropAfter = 20_000;
      }
      if (dropAfter !== undefined) {
        dropAfter -= data.length;
        if (dropAfter <= 0) {
          client.destroy();
          upstream.destroy();
          return;
        }
      }
      upstream.write(data);
    });
    upstream.on('data', (data: Buffer) => client.write(data));
    for (const socket of [client, upstream]) {
      socket.on('error', () => undefined);
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    seen: () => seen,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('S3 multipart uploads of streamed bodies', function () {
  this.timeout(60_000);
  let environment: TestEnvironment;
  let client: S3Client;

  before(async () => {
    environment = await createTestEnvironment({ withoutDatabase: true });
    client = createS3Client(environment.config.s3);
  });
  after(async () => {
    client?.destroy();
    await environment?.close();
  });

  function store(s3: S3Client): BlobStore {
    return createS3BlobStore(
      s3,
      environment.config.s3.bucket,
      { kind: 'none' },
      {
        thresholdBytes: 256 * 1024,
        partBytes: 128 * 1024,
        partsInFlight: 3,
      },
    );
  }

  async function* slices(body: Buffer, size: number): AsyncGenerator<Buffer> {
    for (let at = 0; at < body.length; at += size) {
      await Promise.resolve();
      yield body.subarray(at, at + size);
    }
  }

  async function stored(key: string): Promise<Buffer> {
    const opened = await store(client).open(key, new AbortController().signal);
    if (opened === 'replaced') throw new Error('replaced');
    const parts: Buffer[] = [];
    for await (const part of opened.bytes) parts.push(Buffer.from(part));
    return Buffer.concat(parts);
  }

  it('uploads a body many parts long, byte for byte, as one completed upload', async () => {
    const recording = createS3Client(environment.config.s3);
    const sent = recordCommands(recording);
    try {
      const body = randomBytes(2 * 1024 * 1024 + 12_345); // 17 parts
      await store(recording).putStream('evaluations/mp/output/one', body.length, slices(body, 50_000));
      expect(counts(sent)).to.deep.equal({
        CreateMultipartUploadCommand: 1,
        UploadPartCommand: 17,
        CompleteMultipartUploadCommand: 1,
      });
      expect(sha(await stored('evaluations/mp/output/one'))).to.equal(sha(body));
      // At the threshold, one PutObject.
      await store(recording).putStream(
        'evaluations/mp/output/small',
        256 * 1024,
        slices(randomBytes(256 * 1024), 50_000),
      );
      expect(counts(sent).PutObjectCommand).to.equal(1);
    } finally {
      recording.destroy();
    }
  });

  it('sends a part again when its connection drops in the middle, and the object is whole', async () => {
    const proxy = await partDroppingProxy(new URL(environment.config.s3.endpoint), 2);
    const proxied = createS3Client({ ...environment.config.s3, endpoint: proxy.endpoint });
    try {
      const body = randomBytes(1024 * 1024 + 7);
      await store(proxied).putStream('evaluations/mp/output/retried', body.length, slices(body, 64 * 1024));
      expect(proxy.seen(), 'part 2 was sent twice').to.be.at.least(2);
      expect(sha(await stored('evaluations/mp/output/retried'))).to.equal(sha(body));
    } finally {
      proxied.destroy();
      await proxy.close();
    }
  });

  it("aborts the upload when the source fails: no object, the upload aborted, and the source's error reported", async () => {
    async function* failing(): AsyncGenerator<Buffer> {
      yield randomBytes(400 * 1024);
      await Promise.resolve();
      throw new Error('the client went away');
    }
    const recording = createS3Client(environment.config.s3);
    const sent = recordCommands(recording);
    try {
      const err = await store(recording)
        .putStream('evaluations/mp/output/broken', 1024 * 1024, failing())
        .catch((e: unknown) => e);
      expect((err as Error).message).to.equal('the client went away');
      expect(counts(sent)).to.include({ CreateMultipartUploadCommand: 1, AbortMultipartUploadCommand: 1 });
      expect(sent).to.not.include('CompleteMultipartUploadCommand');
      expect(await store(client).size('evaluations/mp/output/broken')).to.equal(undefined);
    } finally {
      recording.destroy();
    }
  });
});
