import { randomBytes } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import { NotFoundError, ResourceExhaustedError, UnavailableError } from '../../../shared/errors';
import type { CallContext, StreamSink } from '../../../shared/grpc';
import { OutputKind, type ReadOutputResponse } from '../../../shared/generated/crucible/storage/v1/query_service';
import {
  CHUNK_BYTES,
  createReadOutput as createHandler,
  type BlobReader,
  type BodyStore,
  type StoredBody,
} from '../../../services/query/handlers/read-output';
import { createOpenCalls, type OpenCalls } from '../../../services/query/live/open-calls';

/** The handler with room for every call unless `openCalls` says otherwise. */
function createReadOutput(deps: {
  bodies: BodyStore;
  blobs: BlobReader;
  openCalls?: OpenCalls;
}): ReturnType<typeof createHandler> {
  return createHandler({ openCalls: createOpenCalls({ maxOpen: 100, maxOpenPerConnection: 100 }), ...deps });
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
  return { signal: controller.signal, deadline: undefined, metadata: new Metadata(), peer: 'ipv4:127.0.0.1:1' };
}

function bodies(found: StoredBody | undefined | 'unknown-evaluation', inline = Buffer.alloc(0)): BodyStore {
  return {
    find: () => Promise.resolve(found),
    readInline: (_evalId, _kind, offset, length) => Promise.resolve(inline.subarray(offset, offset + length)),
  };
}

/** An object store whose stream yields `parts`, then fails with `failure` if given. */
function blobs(parts: readonly Uint8Array[], failure?: Error): BlobReader & { readonly signals: AbortSignal[] } {
  const signals: AbortSignal[] = [];
  return {
    signals,
    open(_key, signal) {
      signals.push(signal);
      return Promise.resolve(
        (async function* () {
          for (const part of parts) {
            await Promise.resolve(); // parts arrive asynchronously, as from a socket
            yield part;
          }
          if (failure !== undefined) throw failure;
        })(),
      );
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
function expectChunks(messages: readonly ReadOutputResponse[], body: Buffer, totalSize = body.length): void {
  expect(messages).to.have.length(Math.ceil(body.length / CHUNK_BYTES));
  let offset = 0;
  for (const message of messages) {
    expect(message.offset).to.equal(String(offset));
    expect(message.totalSize).to.equal(String(totalSize));
    expect(message.chunk.length).to.equal(Math.min(CHUNK_BYTES, body.length - offset));
    offset += message.chunk.length;
  }
  expect(Buffer.concat(messages.map((m) => m.chunk)).equals(body)).to.equal(true);
}

const request = { evalId: 'e1', kind: OutputKind.OUTPUT_KIND_OUTPUT };

describe('ReadOutput handler', () => {
  it('regroups an S3 body into full chunks, whatever sizes the socket delivers', async () => {
    const body = randomBytes(3 * CHUNK_BYTES + 12_345);
    const sink = collector();
    const read = createReadOutput({
      bodies: bodies({ size: body.length, location: { kind: 's3', key: 'k' } }),
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
      bodies: bodies({ size: body.length, location: { kind: 's3', key: 'k' } }),
      blobs: blobs([body.subarray(0, 10), body.subarray(10)]),
    });
    await read(request, sink, contextOf());
    expectChunks(sink.messages, body);
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
      bodies: bodies({ size: body.length, location: { kind: 's3', key: 'k' } }),
      blobs: store,
    });
    const err = await read(request, sink, contextOf()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UnavailableError);
    expect((err as Error).message).to.include(`after ${CHUNK_BYTES} bytes`);
    expectChunks(sink.messages, body.subarray(0, CHUNK_BYTES), body.length);
    expect(store.signals[0]?.aborted).to.equal(true);
  });

  it('is UNAVAILABLE when the object ends before the size its row records', async () => {
    const body = randomBytes(CHUNK_BYTES + 5);
    const read = createReadOutput({
      bodies: bodies({ size: body.length + 1, location: { kind: 's3', key: 'k' } }),
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
      bodies: bodies({ size: body.length, location: { kind: 's3', key: 'k' } }),
      blobs: store,
    });
    await read(request, sink, contextOf(controller));
    expect(messages).to.have.length(1);
    expect(store.signals[0]?.aborted).to.equal(true);
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
    for (const found of [undefined, { size: 0, location: { kind: 's3', key: 'k' } } as const]) {
      const sink = collector();
      await createReadOutput({ bodies: bodies(found), blobs: blobs([]) })(request, sink, contextOf());
      expect(sink.messages).to.deep.equal([]);
    }
  });
});
