import { NotFoundError, UnavailableError } from '../../../shared/errors';
import type { CallContext, StreamSink } from '../../../shared/grpc';
import type {
  ReadOutputRequest,
  ReadOutputResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { RequestChecks } from '../domain/requests';
import type { OpenCalls } from '../live/open-calls';
import { allocateReadOutputChunk } from '../wire/encoded-messages';

export type BodyKind = 'output' | 'error';

/** Where a whole body is kept, as its row says. */
export type BodyLocation = { readonly kind: 'inline' } | { readonly kind: 's3'; readonly key: string };

export interface StoredBody {
  readonly size: number;
  readonly location: BodyLocation;
}

/** The body rows in PostgreSQL (read-only connection): postgres/body-store.ts. */
export interface BodyStore {
  /** 'unknown-evaluation', undefined when the evaluation has no such body, or the body. */
  find(evalId: string, kind: BodyKind): Promise<StoredBody | undefined | 'unknown-evaluation'>;
  /** `length` bytes of an inline body from `offset` (fewer at the end). */
  readInline(evalId: string, kind: BodyKind, offset: number, length: number): Promise<Buffer>;
}

/** Large bodies in the object store: s3/blob-reader.ts. */
export interface BlobReader {
  /**
   * The object's bytes as a stream, with the version (ETag) they are of; aborting `signal` stops
   * the download and gives its connection back at once. With `from`, the bytes from `from.offset`
   * on, of the version `from.version` only: 'replaced' when the object is no longer that version.
   */
  open(key: string, signal: AbortSignal, from?: BlobPosition): Promise<BlobDownload | 'replaced'>;
}

export interface BlobPosition {
  readonly offset: number;
  readonly version: string;
}

export interface BlobDownload {
  readonly bytes: AsyncIterable<Uint8Array>;
  /** The object's ETag; undefined when the store gives none (then a download cannot be resumed). */
  readonly version: string | undefined;
}

/**
 * Bodies are streamed in chunks of this size (the last one shorter). Large enough that the
 * per-message costs (encoding, gRPC framing, callbacks, the client's decode) are small beside
 * the copying (64 KiB chunks cost a grpc-js client far more CPU per MB), small enough that a
 * slow client makes the stream hold at most grpc-js's 16 queued messages (8 MiB) however large
 * the body (1 MiB chunks were no faster; figures in docs/benchmarks.md). 64 bytes under 512 KiB so that a chunk
 * with its protobuf fields (wire/encoded-messages.ts) stays within 512 KiB.
 */
export const CHUNK_BYTES = 512 * 1024 - 64;

/**
 * Regroups a byte stream into `size`-byte Buffers (the last one shorter) with one copy per
 * byte; each Buffer is new, since the one handed out is still queued for the wire, and has room
 * in front for the response's other fields, so that it is not copied again to be encoded.
 */
async function* inChunks(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Buffer> {
  let chunk: Buffer | undefined;
  let filled = 0;
  for await (const part of source) {
    let at = 0;
    while (at < part.byteLength) {
      chunk ??= allocateReadOutputChunk(size);
      const take = Math.min(size - filled, part.byteLength - at);
      chunk.set(part.subarray(at, at + take), filled);
      filled += take;
      at += take;
      if (filled === size) {
        yield chunk;
        chunk = undefined;
        filled = 0;
      }
    }
  }
  if (chunk !== undefined) yield chunk.subarray(0, filled);
}

/**
 * How long a download waits for one write to the client before it gives its S3 connection back
 * (1 s unless the deps say otherwise). The S3 pool is small (64 sockets, shared by every
 * stream), and a request waiting for a free socket fails after the S3 client's 3 s connect
 * timeout: a socket held by a stalled reader must come back well within it. A write waits only
 * when grpc-js's queue is full, and ends only once the client has taken all of it (16 chunks,
 * 8 MiB): a client keeps a socket only by reading steadily, not by taking a chunk now and then.
 */
export const CLIENT_WAIT_MS = 1_000;

/** The sink's writes, with the offset they have reached and the size every message carries. */
interface BodyWriter {
  readonly size: number;
  /** Bytes handed to the transport so far: where the next chunk starts. */
  readonly offset: number;
  write(chunk: Buffer): Promise<void>;
}

function bodyWriter(sink: StreamSink<ReadOutputResponse>, size: number): BodyWriter {
  const totalSize = String(size);
  let offset = 0;
  return {
    size,
    get offset() {
      return offset;
    },
    async write(chunk) {
      await sink.write({ chunk, offset: String(offset), totalSize });
      offset += chunk.length;
    },
  };
}

/** Resolves true once `written` has, false if `ms` pass first. */
async function within(written: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([written.then(() => true as const), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** One object's read: where from, and how long a write may keep its download waiting. */
interface ObjectRead {
  readonly blobs: BlobReader;
  readonly key: string;
  readonly clientWaitMs: number;
  /** The call's: aborted when the client goes away. */
  readonly signal: AbortSignal;
}

/**
 * Sends an object through `out`, in as many downloads as the client's stalls make it. Aborting
 * a stalled download and asking for the rest later costs one more GetObject per stall and
 * nothing while the client keeps up; the other way to free the socket, GetObjects of bounded
 * ranges read whole before they are sent, costs a request (and its latency) for every range,
 * and memory for a range per stream. A resumed download starts at a chunk boundary (a stall is
 * noticed on a write, and only the last chunk is short), so the chunks are those of one read.
 */
async function sendObject(read: ObjectRead, out: BodyWriter): Promise<void> {
  let version: string | undefined;
  let from: BlobPosition | undefined;
  while (!read.signal.aborted) {
    const download = await sendDownload(read, from, out);
    version ??= download.version;
    if (!download.stalled || out.offset >= out.size || read.signal.aborted) return;
    if (version === undefined)
      throw new UnavailableError(
        `the output store gave no version to resume the read at after ${out.offset} bytes; read again`,
      );
    from = { offset: out.offset, version };
  }
}

/**
 * Sends one download's bytes until it ends or a write keeps it waiting `clientWaitMs`; then
 * it is aborted at once (its socket goes back to the pool), the write is waited for, and
 * `stalled` says that the rest is still to be read.
 */
async function sendDownload(
  read: ObjectRead,
  from: BlobPosition | undefined,
  out: BodyWriter,
): Promise<{ version: string | undefined; stalled: boolean }> {
  const { signal } = read;
  const download = new AbortController();
  const stop = (): void => download.abort();
  signal.addEventListener('abort', stop);
  let stalled = false;
  try {
    const opened = await read.blobs.open(read.key, download.signal, from);
    // UNAVAILABLE, as when the store fails part-way: the client's remedy is the same (a new
    // ReadOutput, from the start), and it gets the new object whole.
    if (opened === 'replaced')
      throw new UnavailableError(
        `the output was replaced in the store while it was read, after ${out.offset} bytes; read it again from the start`,
      );
    try {
      for await (const chunk of inChunks(opened.bytes, CHUNK_BYTES)) {
        if (signal.aborted) break;
        const written = out.write(chunk);
        if (await within(written, read.clientWaitMs)) continue;
        stalled = true;
        download.abort();
        await written;
        break;
      }
    } catch (err) {
      // After our own abort, what the stream throws on the way out is of no interest.
      if (!signal.aborted && !stalled)
        throw new UnavailableError(`the output store failed after ${out.offset} bytes; read again`, { cause: err });
    }
    return { version: opened.version, stalled };
  } finally {
    signal.removeEventListener('abort', stop);
    download.abort();
  }
}

/**
 * ReadOutput: streams the whole stored output (or error message) in {@link CHUNK_BYTES}
 * chunks, from PostgreSQL or S3, each with its offset and the total size. It counts as an open
 * stream (live/open-calls.ts): RESOURCE_EXHAUSTED past the caps. The S3 object is read as the
 * client takes the chunks (`sink.write` waits for `drain`), so a slow reader never makes the
 * server hold the whole body; a client that keeps a write waiting {@link CLIENT_WAIT_MS} has its
 * download aborted, and a ranged read of the same version (ETag) picks up at the offset reached
 * once it reads again. NOT_FOUND for an unknown evaluation; an evaluation without that body
 * streams nothing; UNAVAILABLE when the object store fails part-way, or when the object was
 * replaced while the client stalled (the client has the offset it got to, and reads again).
 */
export function createReadOutput(deps: {
  readonly bodies: BodyStore;
  readonly blobs: BlobReader;
  readonly openCalls: OpenCalls;
  /** Default {@link CLIENT_WAIT_MS}. */
  readonly clientWaitMs?: number;
}) {
  const clientWaitMs = deps.clientWaitMs ?? CLIENT_WAIT_MS;

  return async function readOutput(
    request: ReadOutputRequest,
    sink: StreamSink<ReadOutputResponse>,
    context: CallContext,
  ): Promise<void> {
    const checks = new RequestChecks();
    const evalId = checks.evalId(request.evalId);
    const kind = checks.outputKind(request.kind);
    checks.done();

    const close = deps.openCalls.open(context.peer, 'a ReadOutput stream');
    try {
      await send(evalId, kind, sink, context.signal);
    } finally {
      close();
    }
  };

  async function send(
    evalId: string,
    kind: BodyKind,
    sink: StreamSink<ReadOutputResponse>,
    signal: AbortSignal,
  ): Promise<void> {
    const body = await deps.bodies.find(evalId, kind);
    if (body === 'unknown-evaluation') throw new NotFoundError(`evaluation ${evalId} not found`);
    if (body === undefined || body.size === 0) return;
    const out = bodyWriter(sink, body.size);

    if (body.location.kind === 'inline') {
      // substring() windows of exactly one chunk: each row read is sent as it is.
      while (out.offset < body.size && !signal.aborted) {
        const window = await deps.bodies.readInline(evalId, kind, out.offset, CHUNK_BYTES);
        if (window.length === 0) break;
        await out.write(window);
      }
      return;
    }

    await sendObject({ blobs: deps.blobs, key: body.location.key, clientWaitMs, signal }, out);
    if (out.offset !== body.size && !signal.aborted) {
      throw new UnavailableError(`the output store returned ${out.offset} bytes of ${body.size}; read again`);
    }
  }
}
