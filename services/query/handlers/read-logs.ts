import {
  isTerminalProto,
  logStreamOfProto,
  logStreamViolation,
  type BlobHome,
  type LogStream,
} from '../../../shared/domain';
import { NotFoundError, OutOfRangeError, UnavailableError } from '../../../shared/errors';
import type { CallContext, StreamSink } from '../../../shared/grpc';
import type { ReadLogsRequest, ReadLogsResponse } from '../../../shared/generated/crucible/storage/v1/query_service';
import { RequestChecks } from '../domain/requests';
import type { Change } from '../live/change';
import type { ChangeHub } from '../live/change-hub';
import type { LogHints } from '../live/log-hints';
import type { OpenCalls } from '../live/open-calls';
import type { Shutdown } from '../live/shutdown';
import type { BlobReaders } from './read-output';
import { listenForWakeUps } from './wait-evaluation';

/** A log's stored size, and whether its evaluation has ended (then nothing more comes, but late lines). */
export interface LogState {
  readonly size: number;
  readonly ended: boolean;
  /** When LOG_RETENTION deleted the evaluation's logs (their size stays on record). */
  readonly expiredAt?: Date;
}

/** Some bytes of a log: in hand (kept in PostgreSQL), or a range of a segment in the object store. */
export type LogPart =
  | { readonly offset: number; readonly length: number; readonly bytes: Buffer }
  | {
      readonly offset: number;
      readonly length: number;
      readonly blob: { readonly home: BlobHome; readonly key: string; readonly from: number };
    };

/** A log's state and some of its stored bytes, read together (one snapshot). */
export interface LogWindow {
  readonly state: LogState;
  /** The stored bytes asked for, in order (contiguous; none past the state's size). */
  readonly parts: LogPart[];
}

/** The stored logs in PostgreSQL (read-only connection): postgres/log-segments.ts. */
export interface StoredLogs {
  /**
   * The stream's state and its stored bytes [from, to) (at most to - from of them), in one
   * read; 'unknown-evaluation' when none of `tenant`'s evaluations has the id.
   */
  read(
    tenant: string,
    evalId: string,
    stream: LogStream,
    from: number,
    to: number,
  ): Promise<LogWindow | 'unknown-evaluation'>;
}

/**
 * Bytes asked for per read: what one reader (or the readers of one log, who share the read)
 * holds at a time, however large the log.
 */
export const LOG_WINDOW_BYTES = 1024 * 1024;
/**
 * Bytes asked for by a follower that had everything stored: what a flush usually adds is far
 * less, and reads are grouped by the bytes they ask for (postgres/log-segments.ts). More than
 * this stored meanwhile is read on at once, a window at a time.
 */
const CAUGHT_UP_WINDOW_BYTES = 256 * 1024;
/** The largest message: a window goes out in a few of them. */
const MESSAGE_BYTES = 256 * 1024;
/** A follower rechecks the log this often even when no change was heard (a change missed is late, never lost). */
const RECHECK_MS = 30_000;

/**
 * ReadLogs: sends a log from `offset`, up to `length` bytes (0: all), window by window from
 * PostgreSQL (and S3 for large segments), each message with its offset. With `follow` it then
 * waits for the evaluation's changes (the command side's hint that logs were stored and the
 * hub's change, both awaited events; and every {@link RECHECK_MS})
 * and sends what was appended, until the evaluation has ended and everything stored by then was
 * sent. It counts as an open stream; a shutdown ends it UNAVAILABLE naming the offset to resume
 * at. NOT_FOUND for an unknown evaluation; OUT_OF_RANGE for an offset past what is stored (when
 * not following, or when the evaluation has ended).
 */
export function createReadLogs(deps: {
  readonly logs: StoredLogs;
  readonly blobs: BlobReaders;
  readonly hub: ChangeHub;
  readonly logHints: LogHints;
  readonly openCalls: OpenCalls;
  readonly shutdown: Shutdown;
  readonly clock?: () => number;
}) {
  const now = deps.clock ?? Date.now;

  return async function readLogs(
    request: ReadLogsRequest,
    sink: StreamSink<ReadLogsResponse>,
    context: CallContext,
  ): Promise<void> {
    const checks = new RequestChecks();
    const evalId = checks.evalId(request.evalId);
    const stream = logStreamOfProto(request.stream);
    const streamViolation = logStreamViolation(request.stream, 'stream');
    if (streamViolation !== undefined)
      checks.fail(streamViolation.field, streamViolation.rule, streamViolation.description);
    const offset = checks.byteCount(request.offset, 'offset');
    const length = checks.byteCount(request.length, 'length');
    checks.done();
    const log = stream as LogStream;
    const { tenant } = context.caller;
    const limit = length === 0 ? Infinity : offset + length;

    let at = offset;
    const close = deps.openCalls.open(context.peer, 'a ReadLogs stream');
    // Subscribed before the first read: no change can fall between it and the wait.
    const wakeUps = request.follow
      ? listenForWakeUps(deps, evalId, context.signal, Number.MAX_SAFE_INTEGER, now, {
          on: (changed) => deps.logHints.on(evalId, log, changed),
          // The hint of a log append comes first: its change, applied later, is read again for
          // only when it shows bytes this follower has not sent (or the evaluation's end).
          wants: (change) => isTerminalProto(change.status) || loggedBytes(change, log) > at,
        })
      : undefined;
    let caughtUp = false;
    try {
      for (;;) {
        const ask = caughtUp ? CAUGHT_UP_WINDOW_BYTES : LOG_WINDOW_BYTES;
        const window = await deps.logs.read(tenant, evalId, log, at, Math.min(limit, at + ask));
        if (window === 'unknown-evaluation') throw new NotFoundError(`evaluation ${evalId} not found`);
        const { state, parts } = window;
        if (state.expiredAt !== undefined && state.size > 0)
          throw new NotFoundError(
            `the logs of evaluation ${evalId} were deleted at ${state.expiredAt.toISOString()}, past LOG_RETENTION`,
          );
        if (at > state.size && (wakeUps === undefined || state.ended)) {
          throw new OutOfRangeError(
            `offset ${at} is past the end of the ${log} log of ${evalId} (${state.size} bytes)`,
          );
        }
        const to = Math.min(state.size, limit);
        if (at < to) {
          at = await send(at, parts, sink, context.signal, `the ${log} log of ${evalId}`);
          // More is stored than one window: the next one (a whole one) at once.
          if (at < to && !context.signal.aborted) {
            caughtUp = false;
            continue;
          }
        }
        caughtUp = true;
        if (wakeUps === undefined || at >= limit || state.ended || context.signal.aborted) return;
        const why = await nextWakeUp(wakeUps);
        if (why === 'cancelled') return;
        if (why === 'shutdown') {
          throw new UnavailableError(`the server is shutting down; resume with offset ${at}`);
        }
        // The wake-ups' timer, set as far out as a timer goes (24.8 days): start again.
        if (why === 'due') throw new UnavailableError(`the stream has been open too long; resume with offset ${at}`);
      }
    } finally {
      wakeUps?.close();
      close();
    }
  };

  /** The next reason to look again: a change, a recheck, the end of the call. */
  async function nextWakeUp(wakeUps: ReturnType<typeof listenForWakeUps>): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    const recheck = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve('recheck'), RECHECK_MS);
    });
    try {
      const why = await Promise.race([wakeUps.next(), recheck]);
      wakeUps.takeChanged();
      return why;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Sends a window's parts from `from`, in order; returns the offset after the last byte sent.
   * UNAVAILABLE when the window does not continue the log there (none stored, or a gap).
   */
  async function send(
    from: number,
    parts: readonly LogPart[],
    sink: StreamSink<ReadLogsResponse>,
    signal: AbortSignal,
    what: string,
  ): Promise<number> {
    if (parts.length === 0) throw new UnavailableError(`${what} has no bytes stored at offset ${from}; read again`);
    let at = from;
    for (const part of parts) {
      if (signal.aborted) break;
      if (part.offset !== at) throw new UnavailableError(`${what} has no bytes stored at offset ${at}; read again`);
      if ('bytes' in part) await write(sink, part.bytes, part.offset);
      else await sendObjectRange(part, sink, signal);
      at = part.offset + part.length;
    }
    return at;
  }

  async function sendObjectRange(
    part: Extract<LogPart, { blob: unknown }>,
    sink: StreamSink<ReadLogsResponse>,
    signal: AbortSignal,
  ): Promise<void> {
    const { home, key, from } = part.blob;
    const opened = await deps.blobs(home).open(key, signal, { offset: from, end: from + part.length });
    if (opened === 'replaced') throw new Error(`log segment ${key} changed in the object store`);
    let offset = part.offset;
    try {
      for await (const bytes of opened.bytes) {
        await write(sink, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), offset);
        offset += bytes.byteLength;
      }
    } catch (err) {
      if (!signal.aborted)
        throw new UnavailableError(`the output store failed at offset ${offset}; resume there`, { cause: err });
    }
  }
}

/** The size of `stream` a change shows; unknown (a change that would not decode) reads as more. */
function loggedBytes(change: Change, stream: LogStream): number {
  try {
    // Decoded once per change for all of its followers (Encoded keeps a message that decodes).
    const evaluation = change.update.unreadable === undefined ? change.update.message.evaluation : undefined;
    if (evaluation === undefined) return Infinity;
    return Number(stream === 'stdout' ? evaluation.stdoutBytes : evaluation.stderrBytes);
  } catch {
    return Infinity;
  }
}

/** `bytes` at `offset`, in messages of at most {@link MESSAGE_BYTES}. */
async function write(sink: StreamSink<ReadLogsResponse>, bytes: Buffer, offset: number): Promise<void> {
  for (let at = 0; at < bytes.length; at += MESSAGE_BYTES) {
    await sink.write({ data: bytes.subarray(at, at + MESSAGE_BYTES), offset: String(offset + at) });
  }
}
