import { regroup, type BlobRange, type BlobStore } from '../../../shared/blobs';
import type { BlobHome, BodyKind } from '../../../shared/domain';
import { NotFoundError, OutOfRangeError, UnavailableError } from '../../../shared/errors';
import type { CallContext, StreamSink } from '../../../shared/grpc';
import type {
  ReadOutputRequest,
  ReadOutputResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { RequestChecks } from '../domain/requests';
import type { OpenCalls } from '../live/open-calls';
import { allocateReadOutputChunk } from '../wire/encoded-messages';

export type { BodyKind };

/** Where a whole body is kept, as its row says. */
export type BodyLocation =
  { readonly kind: 'inline' } | { readonly kind: 'blob'; readonly home: BlobHome; readonly key: string };

export interface StoredBody {
  readonly size: number;
  readonly location: BodyLocation;
}

/** The body rows in PostgreSQL (read-only connection): postgres/body-store.ts. */
export interface BodyStore {
  /**
   * 'unknown-evaluation' (none of `tenant`'s has the id), undefined when the evaluation has no
   * such body, or the body.
   */
  find(tenant: string, evalId: string, kind: BodyKind): Promise<StoredBody | undefined | 'unknown-evaluation'>;
  /** `length` bytes of an inline body of `tenant`'s from `offset` (fewer at the end). */
  readInline(tenant: string, evalId: string, kind: BodyKind, offset: number, length: number): Promise<Buffer>;
}

/** Large bodies in the object store (shared/blobs): reads only. */
export type BlobReader = Pick<BlobStore, 'open'>;

/** The reader of each blob store a row can name (blobs/blob-readers.ts). */
export type BlobReaders = (home: BlobHome) => BlobReader;

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
 * How long a download waits for one write to the client before it gives its S3 connection back
 * (1 s unless the deps say otherwise). The S3 pool is small (64 sockets, shared by every
 * stream), and a request waiting for a free socket fails after the S3 client's 3 s connect
 * timeout: a socket held by a stalled reader must come back well within it. A write waits only
 * when grpc-js's queue is full, and ends only once the client has taken all of it (16 chunks,
 * 8 MiB): a client keeps a socket only by reading steadily, not by taking a chunk now and then.
 */
export const CLIENT_WAIT_MS = 1_000;

/** The sink's writes of the bytes [start, end) of a body, with the offset they have reached. */
interface BodyWriter {
  /** Where the read ends (exclusive). */
  readonly end: number;
  /** Where the next chunk starts: the read's first byte plus what was handed to the transport. */
  readonly offset: number;
  write(chunk: Buffer): Promise<void>;
}

function bodyWriter(sink: StreamSink<ReadOutputResponse>, size: number, start: number, end: number): BodyWriter {
  const totalSize = String(size);
  let offset = start;
  return {
    end,
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

/** What a ReadOutput asks for: a body, and the range of it (length 0: to the end). */
interface BodyRead {
  /** The caller's: another tenant's evaluation is not found. */
  readonly tenant: string;
  readonly evalId: string;
  readonly kind: BodyKind;
  readonly offset: number;
  readonly length: number;
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
async function sendObject(read: ObjectRead, out: BodyWriter, whole: boolean): Promise<void> {
  let version: string | undefined;
  // A whole body is one plain GetObject; a range names its bytes.
  let range: BlobRange | undefined = whole ? undefined : { offset: out.offset, end: out.end };
  while (!read.signal.aborted) {
    const download = await sendDownload(read, range, out);
    version ??= download.version;
    if (!download.stalled || out.offset >= out.end || read.signal.aborted) return;
    if (version === undefined)
      throw new UnavailableError(
        `the output store gave no version to resume the read at offset ${out.offset}; read again from there`,
      );
    range = { offset: out.offset, end: out.end, version };
  }
}

/**
 * Sends one download's bytes until it ends or a write keeps it waiting `clientWaitMs`; then
 * it is aborted at once (its socket goes back to the pool), the write is waited for, and
 * `stalled` says that the rest is still to be read.
 */
async function sendDownload(
  read: ObjectRead,
  range: BlobRange | undefined,
  out: BodyWriter,
): Promise<{ version: string | undefined; stalled: boolean }> {
  const { signal } = read;
  const download = new AbortController();
  const stop = (): void => download.abort();
  signal.addEventListener('abort', stop);
  let stalled = false;
  try {
    const opened = await read.blobs.open(read.key, download.signal, range);
    // UNAVAILABLE, as when the store fails part-way: the client's remedy is the same (a new
    // ReadOutput, from the start), and it gets the new object whole.
    if (opened === 'replaced')
      throw new UnavailableError(
        `the output was replaced in the store while it was read, at offset ${out.offset}; read it again from the start`,
      );
    try {
      // Each chunk has room in front for the response's other fields: it is not copied again to be
      // encoded (wire/encoded-messages.ts).
      for await (const chunk of regroup(opened.bytes, CHUNK_BYTES, allocateReadOutputChunk)) {
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
        throw new UnavailableError(`the output store failed at offset ${out.offset}; read again from there`, {
          cause: err,
        });
    }
    return { version: opened.version, stalled };
  } finally {
    signal.removeEventListener('abort', stop);
    download.abort();
  }
}

/**
 * ReadOutput: streams a stored body (output, error message or code), whole or the range
 * [offset, offset + length), in {@link CHUNK_BYTES} chunks, from PostgreSQL or S3, each with its
 * offset in the body and the body's size; a range costs what its bytes cost (a bytea substring,
 * an S3 ranged GET), whatever the body's size. OUT_OF_RANGE for an offset past the end. It counts as an open
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
  readonly blobs: BlobReaders;
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
    const read: BodyRead = {
      tenant: context.caller.tenant,
      evalId: checks.evalId(request.evalId),
      kind: checks.outputKind(request.kind),
      offset: checks.byteCount(request.offset, 'offset'),
      length: checks.byteCount(request.length, 'length'),
    };
    checks.done();

    const close = deps.openCalls.open(context.peer, 'a ReadOutput stream');
    try {
      await send(read, sink, context.signal);
    } finally {
      close();
    }
  };

  async function send(read: BodyRead, sink: StreamSink<ReadOutputResponse>, signal: AbortSignal): Promise<void> {
    const { tenant, evalId, kind, offset } = read;
    const body = await deps.bodies.find(tenant, evalId, kind);
    if (body === 'unknown-evaluation') throw new NotFoundError(`evaluation ${evalId} not found`);
    const size = body?.size ?? 0;
    if (offset > size) {
      throw new OutOfRangeError(`offset ${offset} is past the end of the ${kind} of ${evalId} (${size} bytes)`);
    }
    const end = read.length === 0 ? size : Math.min(size, offset + read.length);
    if (body === undefined || offset === end) return;
    const out = bodyWriter(sink, size, offset, end);

    if (body.location.kind === 'inline') {
      // substring() windows of at most one chunk: each row read is sent as it is.
      while (out.offset < end && !signal.aborted) {
        const window = await deps.bodies.readInline(
          tenant,
          evalId,
          kind,
          out.offset,
          Math.min(CHUNK_BYTES, end - out.offset),
        );
        if (window.length === 0) break;
        await out.write(window);
      }
      return;
    }

    const object = { blobs: deps.blobs(body.location.home), key: body.location.key, clientWaitMs, signal };
    await sendObject(object, out, offset === 0 && end === size);
    if (out.offset !== end && !signal.aborted) {
      throw new UnavailableError(
        `the output store ended the read at offset ${out.offset}, not ${end}; read again from there`,
      );
    }
  }
}
