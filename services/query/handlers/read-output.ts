import { NotFoundError, UnavailableError } from '../../../shared/errors';
import type { CallContext, StreamSink } from '../../../shared/grpc';
import type {
  ReadOutputRequest,
  ReadOutputResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { RequestChecks } from '../domain/requests';

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

export const CHUNK_BYTES = 64 * 1024;
/** Inline bodies are read from PostgreSQL in windows of this size, then cut into chunks. */
const INLINE_WINDOW_BYTES = 16 * CHUNK_BYTES;

/**
 * ReadOutput: streams the whole stored output (or error message) in 64 KiB chunks, from
 * PostgreSQL or S3. Each chunk waits for the client to take the previous ones (`sink.write`),
 * so a slow reader never makes the server hold the whole body. NOT_FOUND for an unknown
 * evaluation; an evaluation without that body streams nothing.
 */
export function createReadOutput(deps: { readonly bodies: BodyStore; readonly blobs: BlobReader }) {
  return async function readOutput(
    request: ReadOutputRequest,
    sink: StreamSink<ReadOutputResponse>,
    context: CallContext,
  ): Promise<void> {
    const checks = new RequestChecks();
    const evalId = checks.evalId(request.evalId);
    const kind = checks.outputKind(request.kind);
    checks.done();

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
      while (offset < body.size && !context.signal.aborted) {
        const window = await deps.bodies.readInline(evalId, kind, offset, INLINE_WINDOW_BYTES);
        if (window.length === 0) break;
        for (let at = 0; at < window.length && !context.signal.aborted; at += CHUNK_BYTES) {
          await send(window.subarray(at, at + CHUNK_BYTES));
        }
      }
      return;
    }

    const download = new AbortController();
    const stop = (): void => download.abort();
    context.signal.addEventListener('abort', stop);
    try {
      const stream = await deps.blobs.open(body.location.key, download.signal);
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      try {
        for await (const part of stream) {
          if (context.signal.aborted) return;
          pending.push(Buffer.from(part.buffer, part.byteOffset, part.byteLength));
          pendingBytes += part.byteLength;
          while (pendingBytes >= CHUNK_BYTES) {
            const joined = Buffer.concat(pending);
            await send(joined.subarray(0, CHUNK_BYTES));
            pending = [joined.subarray(CHUNK_BYTES)];
            pendingBytes = joined.length - CHUNK_BYTES;
          }
        }
      } catch (err) {
        if (context.signal.aborted) return;
        throw new UnavailableError(`the output store failed after ${offset} bytes; read again`, { cause: err });
      }
      if (pendingBytes > 0 && !context.signal.aborted) await send(Buffer.concat(pending));
    } finally {
      context.signal.removeEventListener('abort', stop);
      download.abort();
    }
  };
}
