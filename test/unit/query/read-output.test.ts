import { ANONYMOUS_ADMIN } from '../../../shared/auth';
import { randomBytes } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import {
  NotFoundError,
  OutOfRangeError,
  ResourceExhaustedError,
  UnavailableError,
  ValidationError,
} from '../../../shared/errors';
import type { CallContext, StreamSink } from '../../../shared/grpc';
import { OutputKind, type ReadOutputResponse } from '../../../shared/generated/crucible/storage/v1/query_service';
import {
  CHUNK_BYTES,
  createReadOutput as createHandler,
  type BlobReader,
  type BodyStore,
  type StoredBody,
} from '../../../services/query/handlers/read-output';
import type { BlobRange } from '../../../shared/blobs';
import { createOpenCalls, type OpenCalls } from '../../../services/query/live/open-calls';

/** The handler with room for every call unless `openCalls` says otherwise. */
function createReadOutput(deps: {
  bodies: BodyStore;
  blobs: BlobReader;
  openCalls?: OpenCalls;
  clientWaitMs?: number;
}): ReturnType<typeof createHandler> {
  const blobs = deps.blobs;
  return createHandler({
    openCalls: createOpenCalls({ maxOpen: 100, maxOpenPerConnection: 100 }),
    ...deps,
    // Every body here is in S3: a read of another store would be a bug of the handler.
    blobs: (home) => (home === 's3' ? blobs : expect.fail(`read from ${home}`)),
  });
}

/** A sink that keeps every message, as a client that reads at once would receive them. */
function collector(): StreamSink<ReadOutputResponse> & { readonly messages: ReadOutputResponse[] } {
  const messages: ReadOutputResponse[] = [];
  return {
    messages,
    pending: 0,
    write(message) {
      messages.push(message);
      return Promise.resolve();
    },
  };
}

function contextOf(controller = new AbortController()): CallContext {
  return {
    caller: ANONYMOUS_ADMIN,
    signal: controller.signal,
    deadline: undefined,
    metadata: new Metadata(),
    peer: 'ipv4:127.0.0.1:1',
  };
}

function bodies(found: StoredBody | undefined | 'unknown-evaluation', inline = Buffer.alloc(0)): BodyStore {
  return {
    find: () => Promise.resolve(found),
    readInline: (_tenant, _evalId, _kind, offset, length) => Promise.resolve(inline.subarray(offset, offset + length)),
  };
}

/** Yields `parts` asynchronously, as from a socket, then fails with `failure` if given. */
async function* arriving(parts: readonly Uint8Array[], failure?: Error): AsyncGenerator<Uint8Array> {
  for (const part of parts) {
    await Promise.resolve();
    yield part;
  }
  if (failure !== undefined) throw failure;
}

/** An object store whose stream yields `parts`, then fails with `failure` if given. */
function blobs(parts: readonly Uint8Array[], failure?: Error): BlobReader & { readonly signals: AbortSignal[] } {
  const signals: AbortSignal[] = [];
  return {
    signals,
    open(_key, signal) {
      signals.push(signal);
      return Promise.resolve({ bytes: arriving(parts, failure), version: '"v1"' });
    },
  };
}

/**
 * An object store holding `body` as version `version`, read from any offset; from `replacedAt`
 * on (the count of opens) it holds another version. Records every open.
 */
function objectStore(
  body: Buffer,
  options: { version?: string | undefined; replacedAt?: number } = {},
): BlobReader & { readonly opens: { from: BlobRange | undefined; signal: AbortSignal }[] } {
  const version = 'version' in options ? options.version : '"v1"';
  const opens: { from: BlobRange | undefined; signal: AbortSignal }[] = [];
  return {
    opens,
    open(_key, signal, from) {
      opens.push({ from, signal });
      const pinned = from?.version !== undefined;
      if (pinned && (options.replacedAt ?? Infinity) < opens.length) return Promise.resolve('replaced');
      if (pinned && from?.version !== version) return Promise.resolve('replaced');
      return Promise.resolve({ bytes: arriving(socketParts(body.subarray(from?.offset ?? 0, from?.end))), version });
    },
  };
}

/**
 * A sink whose `stallAt`-th write (0-based) completes only once `until()` resolves: a client
 * that stops reading until then. The others complete at once.
 */
function stallingSink(
  stallAt: number,
  until: () => Promise<void>,
): StreamSink<ReadOutputResponse> & { readonly messages: ReadOutputResponse[] } {
  const messages: ReadOutputResponse[] = [];
  return {
    messages,
    pending: 0,
    async write(message) {
      messages.push(message);
      if (messages.length - 1 === stallAt) await until();
    },
  };
}

const aborted = (signal: AbortSignal | undefined): Promise<void> =>
  new Promise((resolve) => {
    if (signal === undefined) throw new Error('no download was opened');
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });

/** Cuts `body` into parts of irregular sizes, as a socket delivers an HTTP body. */
function socketParts(body: Buffer): Buffer[] {
  const sizes = [1, 16 * 1024, 65_536, 3, 65_535, 40_000];
  const parts: Buffer[] = [];
  for (let at = 0, i = 0; at < body.length; i += 1) {
    const size = sizes[i % sizes.length]!;
    parts.push(body.subarray(at, at + size));
    at += size;
  }
  return parts;
}

/**
 * Every chunk full but the last, offsets contiguous, the total size on each, the bytes those of
 * `body` (a prefix of the whole body when the stream broke off).
 */
function expectChunks(messages: readonly ReadOutputResponse[], body: Buffer, totalSize = body.length, start = 0): void {
  expect(messages).to.have.length(Math.ceil(body.length / CHUNK_BYTES));
  let offset = start;
  for (const message of messages) {
    expect(message.offset).to.equal(String(offset));
    expect(message.totalSize).to.equal(String(totalSize));
    expect(message.chunk.length).to.equal(Math.min(CHUNK_BYTES, start + body.length - offset));
    offset += message.chunk.length;
  }
  expect(Buffer.concat(messages.map((m) => m.chunk)).equals(body)).to.equal(true);
}

const request = { evalId: 'e1', kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' };

describe('ReadOutput handler', () => {
  it('regroups an S3 body into full chunks, whatever sizes the socket delivers', async () => {
    const body = randomBytes(3 * CHUNK_BYTES + 12_345);
    const sink = collector();
    const read = createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: blobs(socketParts(body)),
    });
    await read(request, sink, contextOf());
    expectChunks(sink.messages, body);
    // Each chunk is its own Buffer: queued messages never share bytes that are reused.
    const backing = new Set(sink.messages.map((m) => m.chunk.buffer));
    expect(backing.size).to.equal(sink.messages.length);
  });

  it('sends a body of an exact number of chunks without an empty last chunk', async () => {
    const body = randomBytes(2 * CHUNK_BYTES);
    const sink = collector();
    const read = createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: blobs([body.subarray(0, 10), body.subarray(10)]),
    });
    await read(request, sink, contextOf());
    expectChunks(sink.messages, body);
  });

  describe('a range', () => {
    const body = randomBytes(3 * CHUNK_BYTES + 77);
    const ranged = (offset: number, length: number): typeof request => ({
      ...request,
      offset: String(offset),
      length: String(length),
    });

    it('of an inline body reads only its windows, with offsets in the whole body', async () => {
      const sink = collector();
      const windows: [number, number][] = [];
      const store = bodies({ size: body.length, location: { kind: 'inline' } }, body);
      const read = createReadOutput({
        bodies: {
          ...store,
          readInline: (tenant, evalId, kind, offset, length) => {
            windows.push([offset, length]);
            return store.readInline(tenant, evalId, kind, offset, length);
          },
        },
        blobs: blobs([]),
      });
      await read(ranged(CHUNK_BYTES - 5, CHUNK_BYTES + 10), sink, contextOf());
      expectChunks(sink.messages, body.subarray(CHUNK_BYTES - 5, 2 * CHUNK_BYTES + 5), body.length, CHUNK_BYTES - 5);
      expect(windows).to.deep.equal([
        [CHUNK_BYTES - 5, CHUNK_BYTES],
        [2 * CHUNK_BYTES - 5, 10],
      ]);
    });

    it('of an S3 body asks the store for exactly its bytes, and stops at the end of the body', async () => {
      const store = objectStore(body);
      const sink = collector();
      await createReadOutput({
        bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
        blobs: store,
      })(ranged(body.length - 100, 1000), sink, contextOf());
      expectChunks(sink.messages, body.subarray(body.length - 100), body.length, body.length - 100);
      expect(store.opens.map((o) => o.from)).to.deep.equal([{ offset: body.length - 100, end: body.length }]);
    });

    it('is empty at the end of the body and OUT_OF_RANGE past it', async () => {
      const deps = { bodies: bodies({ size: body.length, location: { kind: 'inline' } }, body), blobs: blobs([]) };
      const sink = collector();
      await createReadOutput(deps)(ranged(body.length, 0), sink, contextOf());
      expect(sink.messages).to.deep.equal([]);
      const err = await createReadOutput(deps)(ranged(body.length + 1, 0), collector(), contextOf()).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(OutOfRangeError);
      expect((err as Error).message).to.include(`offset ${body.length + 1} is past the end`);
      const none = await createReadOutput({ bodies: bodies(undefined), blobs: blobs([]) })(
        ranged(1, 0),
        collector(),
        contextOf(),
      ).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(none, 'a body never stored has size 0').to.be.instanceOf(OutOfRangeError);
    });

    it('refuses a negative offset or length, naming each', async () => {
      const err = await createReadOutput({ bodies: bodies(undefined), blobs: blobs([]) })(
        { ...request, offset: '-1', length: '-2' },
        collector(),
        contextOf(),
      ).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(ValidationError);
      expect((err as ValidationError).violations.map((v) => [v.field, v.rule])).to.deep.equal([
        ['offset', 'OUT_OF_RANGE'],
        ['length', 'OUT_OF_RANGE'],
      ]);
    });
  });

  it('reads the code with kind CODE', async () => {
    const kinds: string[] = [];
    const code = Buffer.from('print("hi")');
    const store = bodies({ size: code.length, location: { kind: 'inline' } }, code);
    const sink = collector();
    await createReadOutput({
      bodies: {
        ...store,
        find: (tenant, evalId, kind) => {
          kinds.push(kind);
          return store.find(tenant, evalId, kind);
        },
      },
      blobs: blobs([]),
    })({ ...request, kind: OutputKind.OUTPUT_KIND_CODE }, sink, contextOf());
    expect(kinds).to.deep.equal(['code']);
    expectChunks(sink.messages, code);
  });

  it('streams an inline body in windows of one chunk', async () => {
    const body = randomBytes(CHUNK_BYTES + 17);
    const sink = collector();
    const read = createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'inline' } }, body),
      blobs: blobs([]),
    });
    await read(request, sink, contextOf());
    expectChunks(sink.messages, body);
  });

  it('is UNAVAILABLE when the object store fails part-way, after the chunks it could send', async () => {
    const body = randomBytes(2 * CHUNK_BYTES + 5);
    const sink = collector();
    const store = blobs(socketParts(body.subarray(0, CHUNK_BYTES + 100)), new Error('socket hang up'));
    const read = createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: store,
    });
    const err = await read(request, sink, contextOf()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UnavailableError);
    expect((err as Error).message).to.include(`at offset ${CHUNK_BYTES}`);
    expectChunks(sink.messages, body.subarray(0, CHUNK_BYTES), body.length);
    expect(store.signals[0]?.aborted).to.equal(true);
  });

  it('is UNAVAILABLE when the object ends before the size its row records', async () => {
    const body = randomBytes(CHUNK_BYTES + 5);
    const read = createReadOutput({
      bodies: bodies({ size: body.length + 1, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: blobs([body]),
    });
    const err = await read(request, collector(), contextOf()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UnavailableError);
  });

  it('stops reading the object and sends nothing more once the client cancels', async () => {
    const body = randomBytes(4 * CHUNK_BYTES);
    const controller = new AbortController();
    const messages: ReadOutputResponse[] = [];
    const sink: StreamSink<ReadOutputResponse> = {
      pending: 0,
      write(message) {
        messages.push(message);
        controller.abort();
        return Promise.resolve();
      },
    };
    const store = blobs(socketParts(body));
    const read = createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: store,
    });
    await read(request, sink, contextOf(controller));
    expect(messages).to.have.length(1);
    expect(store.signals[0]?.aborted).to.equal(true);
  });

  it('gives a stalled download up, and reads the rest of the same version from where the client got to', async () => {
    const body = randomBytes(4 * CHUNK_BYTES + 99);
    const store = objectStore(body);
    // The second write waits until the download has been given up: the client reads again only then.
    const sink = stallingSink(1, () => aborted(store.opens[0]?.signal));
    await createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: store,
      clientWaitMs: 5,
    })(request, sink, contextOf());
    expectChunks(sink.messages, body);
    expect(store.opens.map((o) => o.from)).to.deep.equal([
      undefined,
      { offset: 2 * CHUNK_BYTES, end: body.length, version: '"v1"' },
    ]);
  });

  it('keeps one download while the client keeps up', async () => {
    const body = randomBytes(3 * CHUNK_BYTES);
    const store = objectStore(body);
    const sink = collector();
    await createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: store,
      clientWaitMs: 5,
    })(request, sink, contextOf());
    expectChunks(sink.messages, body);
    expect(store.opens).to.have.length(1);
  });

  it('does not read again when the client stalled on the last chunk', async () => {
    const body = randomBytes(2 * CHUNK_BYTES);
    const store = objectStore(body);
    const sink = stallingSink(1, () => aborted(store.opens[0]?.signal));
    await createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: store,
      clientWaitMs: 5,
    })(request, sink, contextOf());
    expectChunks(sink.messages, body);
    expect(store.opens).to.have.length(1);
  });

  it('is UNAVAILABLE, and sends nothing of the new object, when the object was replaced during the stall', async () => {
    const body = randomBytes(4 * CHUNK_BYTES);
    const store = objectStore(body, { replacedAt: 1 });
    const sink = stallingSink(1, () => aborted(store.opens[0]?.signal));
    const err = await createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: store,
      clientWaitMs: 5,
    })(request, sink, contextOf()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UnavailableError);
    expect((err as Error).message).to.include(`replaced in the store while it was read, at offset ${2 * CHUNK_BYTES}`);
    expectChunks(sink.messages, body.subarray(0, 2 * CHUNK_BYTES), body.length);
  });

  it('is UNAVAILABLE when a stalled download cannot be resumed: the store gave no version', async () => {
    const body = randomBytes(4 * CHUNK_BYTES);
    const store = objectStore(body, { version: undefined });
    const sink = stallingSink(0, () => aborted(store.opens[0]?.signal));
    const err = await createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: store,
      clientWaitMs: 5,
    })(request, sink, contextOf()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UnavailableError);
    expect(store.opens).to.have.length(1);
    expectChunks(sink.messages, body.subarray(0, CHUNK_BYTES), body.length);
  });

  it('reads nothing more when the client cancels while its download is given up', async () => {
    const body = randomBytes(4 * CHUNK_BYTES);
    const controller = new AbortController();
    const store = objectStore(body);
    const sink = stallingSink(0, async () => {
      await aborted(store.opens[0]?.signal);
      controller.abort(); // the real sink's write then returns at once
    });
    await createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'blob', home: 's3', key: 'k' } }),
      blobs: store,
      clientWaitMs: 5,
    })(request, sink, contextOf(controller));
    expect(store.opens).to.have.length(1);
    expect(sink.messages).to.have.length(1);
  });

  it('counts as an open stream: RESOURCE_EXHAUSTED past the cap, the place given back when it ends', async () => {
    const openCalls = createOpenCalls({ maxOpen: 10, maxOpenPerConnection: 1 });
    const body = randomBytes(2 * CHUNK_BYTES);
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started: () => void = () => undefined;
    const writing = new Promise<void>((resolve) => {
      started = resolve;
    });
    const read = createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 'inline' } }, body),
      blobs: blobs([]),
      openCalls,
    });
    const first = read(
      request,
      stallingSink(0, async () => {
        started();
        await held;
      }),
      contextOf(),
    );
    await writing;
    expect(openCalls.count).to.equal(1);
    const refused = await read(request, collector(), contextOf()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).to.be.instanceOf(ResourceExhaustedError);
    expect((refused as Error).message).to.include('ReadOutput');
    release();
    await first;
    expect(openCalls.count).to.equal(0);
    const unknown = createReadOutput({ bodies: bodies('unknown-evaluation'), blobs: blobs([]), openCalls });
    await unknown(request, collector(), contextOf()).catch(() => undefined);
    expect(openCalls.count).to.equal(0);
  });

  it('is NOT_FOUND for an unknown evaluation and sends nothing for a missing or empty body', async () => {
    const unknown = createReadOutput({ bodies: bodies('unknown-evaluation'), blobs: blobs([]) });
    const err = await unknown(request, collector(), contextOf()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(NotFoundError);
    for (const found of [undefined, { size: 0, location: { kind: 'blob', home: 's3', key: 'k' } } as const]) {
      const sink = collector();
      await createReadOutput({ bodies: bodies(found), blobs: blobs([]) })(request, sink, contextOf());
      expect(sink.messages).to.deep.equal([]);
    }
  });
});
