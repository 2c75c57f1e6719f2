import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import {
  BlobNotFoundError,
  BlobRangeError,
  createFileBlobStore,
  createMemoryBlobStore,
  createS3BlobStore,
  type BlobDownload,
  type BlobRange,
  type BlobStore,
} from '../../../shared/blobs';
import { createS3Client } from '../../../shared/s3';
import { createTestEnvironment, type TestEnvironment } from '../../support/environment';

/** Every byte of an open, or 'replaced'. */
async function bytesOf(opened: BlobDownload | 'replaced'): Promise<Buffer | 'replaced'> {
  if (opened === 'replaced') return opened;
  const parts: Buffer[] = [];
  for await (const part of opened.bytes) parts.push(Buffer.from(part));
  return Buffer.concat(parts);
}

async function read(store: BlobStore, key: string, range?: BlobRange): Promise<Buffer | 'replaced'> {
  return bytesOf(await store.open(key, new AbortController().signal, range));
}

async function listed(store: BlobStore, prefix: string): Promise<[string, number][]> {
  const entries: [string, number][] = [];
  for await (const entry of store.list(prefix)) entries.push([entry.key, entry.size]);
  return entries.sort(([a], [b]) => (a < b ? -1 : 1));
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail('expected a rejection'),
    (err: unknown) => err,
  );
}

async function* parts(...chunks: Buffer[]): AsyncGenerator<Buffer> {
  for (const chunk of chunks) {
    await Promise.resolve();
    yield chunk;
  }
}

async function* failingAfter(chunk: Buffer): AsyncGenerator<Buffer> {
  yield chunk;
  await Promise.resolve();
  throw new Error('the client went away');
}

interface StoreUnderTest {
  readonly store: BlobStore;
  /** Anything the store keeps beside its objects (temporary files), to check a failed write left nothing. */
  leftovers(): Promise<string[]>;
  close(): Promise<void>;
}

/**
 * One contract, three stores: S3 (a real S3 API server), the file system, memory. Each test
 * works under a prefix of its own, so the stores start empty for it.
 */
const STORES: Record<string, () => Promise<StoreUnderTest>> = {
  s3: async () => {
    const environment: TestEnvironment = await createTestEnvironment({ withoutDatabase: true });
    const client: S3Client = createS3Client(environment.config.s3);
    return {
      store: createS3BlobStore(client, environment.config.s3.bucket),
      leftovers: () => Promise.resolve([]),
      async close() {
        client.destroy();
        await environment.close();
      },
    };
  },
  // The same server, every streamed body above 64 KiB in parts of 32 KiB, three at once.
  's3 multipart': async () => {
    const environment: TestEnvironment = await createTestEnvironment({ withoutDatabase: true });
    const client: S3Client = createS3Client(environment.config.s3);
    const multipart = { thresholdBytes: 64 * 1024, partBytes: 32 * 1024, partsInFlight: 3 };
    return {
      store: createS3BlobStore(client, environment.config.s3.bucket, { kind: 'none' }, multipart),
      leftovers: () => Promise.resolve([]),
      async close() {
        client.destroy();
        await environment.close();
      },
    };
  },
  file: async () => {
    const root = await mkdtemp(join(tmpdir(), 'crucible-blobs-'));
    const all = async (dir: string): Promise<string[]> =>
      (await readdir(dir, { recursive: true, encoding: 'utf8' })).filter((name) =>
        name.split('/').pop()?.startsWith('.'),
      );
    return {
      store: createFileBlobStore(root),
      leftovers: () => all(root),
      close: () => rm(root, { recursive: true, force: true }),
    };
  },
  memory: () =>
    Promise.resolve({
      store: createMemoryBlobStore(),
      leftovers: () => Promise.resolve([]),
      close: () => Promise.resolve(),
    }),
};

for (const [name, create] of Object.entries(STORES)) {
  describe(`blob store contract: ${name}`, function () {
    this.timeout(30_000);
    let subject: StoreUnderTest;
    let store: BlobStore;
    let prefix: string;
    let test = 0;

    before(async () => {
      subject = await create();
      store = subject.store;
    });
    after(async () => {
      await subject?.close();
    });
    beforeEach(() => {
      test += 1;
      prefix = `contract/t${test}/`;
    });

    it('puts and gets an object byte for byte, and replaces it whole', async () => {
      const first = randomBytes(300_000);
      await store.put(`${prefix}a`, first);
      expect(await read(store, `${prefix}a`)).to.deep.equal(first);
      const second = Buffer.from('shorter');
      await store.put(`${prefix}a`, second);
      expect(((await read(store, `${prefix}a`)) as Buffer).toString()).to.equal('shorter');
      expect(await store.size(`${prefix}a`)).to.equal(second.length);
    });

    it('streams an object of a declared size in, and keeps an empty one', async () => {
      const body = randomBytes(200_000);
      await store.putStream(`${prefix}s`, body.length, parts(body.subarray(0, 70_000), body.subarray(70_000)));
      expect(await read(store, `${prefix}s`)).to.deep.equal(body);
      await store.put(`${prefix}empty`, Buffer.alloc(0));
      expect(await store.size(`${prefix}empty`)).to.equal(0);
      expect(((await read(store, `${prefix}empty`)) as Buffer).length).to.equal(0);
    });

    it('reads ranges: the bytes asked for, cut at the end, refused from past it', async () => {
      const body = randomBytes(100_000);
      await store.put(`${prefix}r`, body);
      expect(await read(store, `${prefix}r`, { offset: 10, end: 20 })).to.deep.equal(body.subarray(10, 20));
      expect(await read(store, `${prefix}r`, { offset: 99_990 })).to.deep.equal(body.subarray(99_990));
      expect(await read(store, `${prefix}r`, { offset: 99_990, end: 200_000 })).to.deep.equal(body.subarray(99_990));
      expect(await rejection(read(store, `${prefix}r`, { offset: 100_000 }))).to.be.instanceOf(BlobRangeError);
    });

    it('pins a read to a version: the same version reads on, a replaced object says so', async () => {
      await store.put(`${prefix}v`, Buffer.from('version one'));
      const opened = await store.open(`${prefix}v`, new AbortController().signal);
      if (opened === 'replaced') return expect.fail('a first open is never replaced');
      await bytesOf(opened);
      expect(opened.version, 'every store gives a version').to.be.a('string');
      const again = await read(store, `${prefix}v`, { offset: 8, version: opened.version as string });
      expect((again as Buffer).toString()).to.equal('one');
      await store.put(`${prefix}v`, Buffer.from('version two, longer'));
      expect(await read(store, `${prefix}v`, { offset: 8, version: opened.version as string })).to.equal('replaced');
    });

    it('says a missing key is missing: open rejects, size is undefined, delete is fine', async () => {
      expect(await rejection(read(store, `${prefix}missing`))).to.be.instanceOf(BlobNotFoundError);
      expect(await store.size(`${prefix}missing`)).to.equal(undefined);
      await store.delete(`${prefix}missing`);
    });

    it('deletes, and lists by prefix with sizes', async () => {
      await store.put(`${prefix}dir/one`, Buffer.from('1'));
      await store.put(`${prefix}dir/two`, Buffer.from('22'));
      await store.put(`${prefix}dir/sub/three`, Buffer.from('333'));
      await store.put(`${prefix}other`, Buffer.from('4444'));
      expect(await listed(store, `${prefix}dir/`)).to.deep.equal([
        [`${prefix}dir/one`, 1],
        [`${prefix}dir/sub/three`, 3],
        [`${prefix}dir/two`, 2],
      ]);
      expect(await listed(store, `${prefix}dir/t`)).to.deep.equal([[`${prefix}dir/two`, 2]]);
      await store.delete(`${prefix}dir/one`);
      expect((await listed(store, prefix)).map(([key]) => key)).to.deep.equal([
        `${prefix}dir/sub/three`,
        `${prefix}dir/two`,
        `${prefix}other`,
      ]);
      expect(await listed(store, `${prefix}nothing/`)).to.deep.equal([]);
      const entry = (await store.list(`${prefix}other`)[Symbol.asyncIterator]().next()).value as { modifiedAt: Date };
      expect(Math.abs(entry.modifiedAt.getTime() - Date.now()), 'modifiedAt is recent').to.be.below(120_000);
    });

    it('leaves one whole object when writers race on a key', async () => {
      const bodies = Array.from({ length: 8 }, (_, i) => Buffer.alloc(50_000 + i, i + 1));
      await Promise.all(
        bodies.map((body, i) =>
          i % 2 === 0 ? store.put(`${prefix}race`, body) : store.putStream(`${prefix}race`, body.length, parts(body)),
        ),
      );
      const stored = (await read(store, `${prefix}race`)) as Buffer;
      expect(
        bodies.some((body) => body.equals(stored)),
        'the stored object is one of the writes, whole',
      ).to.equal(true);
      expect(await listed(store, prefix)).to.deep.equal([[`${prefix}race`, stored.length]]);
      expect(await subject.leftovers()).to.deep.equal([]);
    });

    it('keeps nothing of a broken upload: a failing source, too few bytes, too many', async () => {
      const cases: [string, () => Promise<void>][] = [
        ['fails', () => store.putStream(`${prefix}fails`, 100_000, failingAfter(randomBytes(10_000)))],
        ['short', () => store.putStream(`${prefix}short`, 100_000, parts(Buffer.alloc(50_000)))],
        ['long', () => store.putStream(`${prefix}long`, 10, parts(Buffer.alloc(50)))],
      ];
      for (const [label, upload] of cases) {
        expect(await rejection(upload()), label).to.be.instanceOf(Error);
      }
      expect(await listed(store, prefix)).to.deep.equal([]);
      expect(await subject.leftovers()).to.deep.equal([]);
    });

    it('never leaves part of a broken upload over an existing object: the old one whole, or none', async () => {
      // S3 keeps the old object; some S3 API servers (s3rver) store what they got, which the
      // S3 store then deletes: either way no reader ever sees a partial body.
      await store.put(`${prefix}kept`, Buffer.from('old'));
      expect(await rejection(store.putStream(`${prefix}kept`, 100, failingAfter(Buffer.alloc(10))))).to.be.instanceOf(
        Error,
      );
      const size = await store.size(`${prefix}kept`);
      if (size !== undefined) expect(((await read(store, `${prefix}kept`)) as Buffer).toString()).to.equal('old');
      expect(await subject.leftovers()).to.deep.equal([]);
    });

    it('stops a read when its signal is aborted', async () => {
      const body = randomBytes(4 * 1024 * 1024);
      await store.put(`${prefix}big`, body);
      const abort = new AbortController();
      const opened = await store.open(`${prefix}big`, abort.signal);
      if (opened === 'replaced') return expect.fail('not replaced');
      let received = 0;
      try {
        for await (const part of opened.bytes) {
          received += part.byteLength;
          abort.abort();
        }
      } catch {
        // an aborted read may end with an error
      }
      expect(received, 'the read stopped well before the end').to.be.below(body.length);
    });

    it('refuses keys that could leave its root or hide among its own files', async () => {
      for (const key of ['', '/abs', 'a/../b', 'a//b', '.hidden', 'a/.tmp', 'a\\b']) {
        expect(await rejection(store.put(key, Buffer.from('x'))), key).to.be.instanceOf(Error);
      }
    });
  });
}
