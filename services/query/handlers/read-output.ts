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
  /** The object's bytes as a stream; aborting `signal` stops the download. */
  open(key: string, signal: AbortSignal): Promise<AsyncIterable<Uint8Array>>;
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
 * ReadOutput: streams the whole stored output (or error message) in {@link CHUNK_BYTES}
 * chunks, from PostgreSQL or S3, each with its offset and the total size. It counts as an open
 * stream (live/open-calls.ts): RESOURCE_EXHAUSTED past the caps. The S3 object is read as the
 * client takes the chunks (`sink.write` waits for `drain`), so a slow reader never
 * makes the server hold the whole body. NOT_FOUND for an unknown evaluation; an evaluation
 * without that body streams nothing; UNAVAILABLE when the object store fails part-way (the
 * client has the offset it got to).
 */
export function createReadOutput(deps: {
  readonly bodies: BodyStore;
  readonly blobs: BlobReader;
  readonly openCalls: OpenCalls;
}) {
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
      await send(evalId, kind, sink, context);
    } finally {
      close();
    }
  };

  async function send(
    evalId: string,
    kind: BodyKind,
    sink: StreamSink<ReadOutputResponse>,
    context: CallContext,
  ): Promise<void> {
    const body = await deps.bodies.find(evalId, kind);
    if (body === 'unknown-evaluation') throw new NotFoundError(`evaluation ${evalId} not found`);
    if (body === undefined || body.size === 0) return;
    const totalSize = String(body.size);
    let offset = 0;
    const send = async (chunk: Buffer): Promise<void> => {
      await sink.write({ chunk, offset: String(offset), totalSize });
      offset += chunk.length;
    };

    if (body.location.kind === 'inline') {
      // substring() windows of exactly one chunk: each row read is sent as it is.
      while (offset < body.size && !context.signal.aborted) {
        const window = await deps.bodies.readInline(evalId, kind, offset, CHUNK_BYTES);
        if (window.length === 0) break;
        await send(window);
      }
      return;
    }

    const download = new AbortController();
    const stop = (): void => download.abort();
    context.signal.addEventListener('abort', stop);
    try {
      const stream = await deps.blobs.open(body.location.key, download.signal);
      try {
        for await (const chunk of inChunks(stream, CHUNK_BYTES)) {
          if (context.signal.aborted) return;
          await send(chunk);
        }
      } catch (err) {
        if (context.signal.aborted) return;
        throw new UnavailableError(`the output store failed after ${offset} bytes; read again`, { cause: err });
      }
      if (offset !== body.size && !context.signal.aborted) {
        throw new UnavailableError(`the output store returned ${offset} bytes of ${body.size}; read again`);
      }
    } finally {
      context.signal.removeEventListener('abort', stop);
      download.abort();
    }
  }
}
