import { Readable } from 'node:stream';
import { expect } from 'chai';
import { createMemoryBlobStore, type BlobStore } from '../../../shared/blobs';
import { UnavailableError } from '../../../shared/errors';
import { createLogger } from '../../../shared/logging';
import { createFallbackStore } from '../../../services/command/blobs/fallback-store';

/** A memory store whose writes fail with `failure` while `down` says so, counting the attempts. */
function flaky(failure: () => Error): BlobStore & { down: boolean; attempts: number } {
  const inner = createMemoryBlobStore();
  const store = {
    ...inner,
    down: false,
    attempts: 0,
    put(key: string, content: Buffer) {
      store.attempts += 1;
      return store.down ? Promise.reject(failure()) : inner.put(key, content);
    },
    putStream(key: string, size: number, source: AsyncIterable<Buffer>) {
      store.attempts += 1;
      return store.down ? Promise.reject(failure()) : inner.putStream(key, size, source);
    },
  };
  return store;
}

async function bytes(store: BlobStore, key: string): Promise<string | undefined> {
  if ((await store.size(key)) === undefined) return undefined;
  const opened = await store.open(key, new AbortController().signal);
  if (opened === 'replaced') return undefined;
  const parts: Buffer[] = [];
  for await (const part of opened.bytes) parts.push(Buffer.from(part));
  return Buffer.concat(parts).toString();
}

describe('command blob writes with a fallback store', () => {
  let now = 0;
  const setup = (failure: () => Error = () => new UnavailableError('S3 is down')) => {
    const primary = flaky(failure);
    const fallback = createMemoryBlobStore();
    const store = createFallbackStore({
      primary,
      fallback,
      retryPrimaryAfterMs: 1000,
      now: () => now,
      logger: createLogger('error', {}),
    });
    return { primary, fallback, store };
  };

  it('writes to S3 while it answers, and says so', async () => {
    const { primary, fallback, store } = setup();
    expect(await store.put('a', Buffer.from('x'))).to.equal('s3');
    expect(await bytes(primary, 'a')).to.equal('x');
    expect(await bytes(fallback, 'a')).to.equal(undefined);
  });

  it('writes to the fallback when S3 is unavailable, then skips S3 until the retry time', async () => {
    const { primary, fallback, store } = setup();
    primary.down = true;
    expect(await store.put('a', Buffer.from('first'))).to.equal('file');
    expect(await bytes(fallback, 'a')).to.equal('first');
    expect(primary.attempts).to.equal(1);
    now += 500;
    expect(await store.put('b', Buffer.from('second'))).to.equal('file');
    expect(primary.attempts, 'S3 left alone while it is known down').to.equal(1);
    // A stream goes where the last outcome points: to the fallback, whole.
    expect(await store.putStream('c', 3, Readable.from([Buffer.from('abc')]))).to.equal('file');
    expect(await bytes(fallback, 'c')).to.equal('abc');

    now += 1000;
    primary.down = false;
    expect(await store.put('d', Buffer.from('back'))).to.equal('s3');
    expect(await bytes(primary, 'd')).to.equal('back');
  });

  it('fails a stream that S3 refuses (its bytes cannot be sent twice), and sends the next one to the fallback', async () => {
    const { primary, store } = setup();
    primary.down = true;
    const err = await store.putStream('s', 3, Readable.from([Buffer.from('abc')])).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(UnavailableError);
    expect(await store.putStream('s', 3, Readable.from([Buffer.from('abc')]))).to.equal('file');
  });

  it('passes on an error that is not an outage, without falling back', async () => {
    const { primary, fallback, store } = setup(() => new Error('AccessDenied'));
    primary.down = true;
    const err = await store.put('a', Buffer.from('x')).catch((e: unknown) => e);
    expect((err as Error).message).to.equal('AccessDenied');
    expect(await bytes(fallback, 'a')).to.equal(undefined);
  });

  it('deletes from the store the blob is in', async () => {
    const { primary, fallback, store } = setup();
    await primary.put('k', Buffer.from('in s3'));
    await fallback.put('k', Buffer.from('in file'));
    await store.delete('k', 'file');
    expect([await bytes(primary, 'k'), await bytes(fallback, 'k')]).to.deep.equal(['in s3', undefined]);
  });

  it('is S3 alone without a fallback: an outage is UNAVAILABLE', async () => {
    const primary = flaky(() => new UnavailableError('S3 is down'));
    primary.down = true;
    const store = createFallbackStore({
      primary,
      fallback: undefined,
      retryPrimaryAfterMs: 1000,
      now: () => now,
      logger: createLogger('error', {}),
    });
    expect(await store.put('a', Buffer.from('x')).catch((e: unknown) => e)).to.be.instanceOf(UnavailableError);
    expect(await store.put('a', Buffer.from('x')).catch((e: unknown) => e)).to.be.instanceOf(UnavailableError);
    expect(primary.attempts, 'every write tries S3').to.equal(2);
  });
});
