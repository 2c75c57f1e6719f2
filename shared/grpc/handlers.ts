import type { EventEmitter } from 'node:events';
import { addAbortSignal } from 'node:stream';
import {
  status as Status,
  type Metadata,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { DeadlineError } from '../errors';
import type { CallLog } from './call-log';
import { toStatus } from './status';

/** What a handler may know of its call: a signal that fires when the client goes away. */
export interface CallContext {
  readonly signal: AbortSignal;
  /** The call's deadline, or undefined when the client set none. */
  readonly deadline: Date | undefined;
  readonly metadata: Metadata;
  /** The client's address and port: one per connection. */
  readonly peer: string;
}

export type UnaryHandler<Req, Res> = (request: Req, context: CallContext) => Promise<Res>;

/**
 * A server stream as handlers see it: `write` resolves once the message is handed to the
 * transport, waiting for `drain` when the client reads slowly, so that no handler can buffer
 * without bound.
 */
export interface StreamSink<Res> {
  write(message: Res): Promise<void>;
  /** Messages written but not yet flushed to the client (grows when the client is slow). */
  readonly pending: number;
}

export type ServerStreamHandler<Req, Res> = (
  request: Req,
  sink: StreamSink<Res>,
  context: CallContext,
) => Promise<void>;

/**
 * A client stream as handlers see it: the messages in order, read as the handler asks for them
 * (the transport's flow control holds the client back meanwhile). Iterating throws when the
 * client goes away, so a handler never waits forever for a message that will not come.
 */
export type ClientStreamHandler<Req, Res> = (messages: AsyncIterable<Req>, context: CallContext) => Promise<Res>;

function deadlineOf(call: { getDeadline(): Date | number }): Date | undefined {
  const deadline = call.getDeadline();
  if (deadline instanceof Date) return deadline;
  return Number.isFinite(deadline) ? new Date(deadline) : undefined;
}

/** What every kind of call has: its cancellation event, deadline and metadata. */
type AnyCall = EventEmitter & { getDeadline(): Date | number; getPeer(): string; readonly metadata: Metadata };

function contextOf(call: AnyCall): {
  context: CallContext;
  dispose: () => void;
} {
  const controller = new AbortController();
  const onCancel = (): void => controller.abort();
  call.on('cancelled', onCancel);
  return {
    context: { signal: controller.signal, deadline: deadlineOf(call), metadata: call.metadata, peer: call.getPeer() },
    dispose: () => call.off('cancelled', onCancel),
  };
}

/**
 * Runs a call that has one answer and gives it to grpc-js exactly once, mapping every throw
 * (through a promise, so that a synchronous throw is mapped too, never left to grpc-js).
 * `quietOnCancel`: a throw after the client went away answers CANCELLED unlogged (a client
 * stream's reads fail then by design: nobody hears the status, and it is not the server's error).
 */
function answerOnce<Res>(
  call: AnyCall,
  callback: sendUnaryData<Res>,
  method: string,
  log: CallLog,
  run: (context: CallContext) => Promise<Res>,
  quietOnCancel = false,
): void {
  const { context, dispose } = contextOf(call);
  new Promise<Res>((resolve) => resolve(run(context))).then(
    (response) => {
      dispose();
      callback(null, response);
    },
    (err: unknown) => {
      dispose();
      if (quietOnCancel && context.signal.aborted)
        callback({ code: Status.CANCELLED, details: 'cancelled by the client' });
      else callback(toStatus(err, log, method));
    },
  );
}

/** Adapts an async handler to grpc-js: answers the callback exactly once, mapping every throw. */
export function unary<Req, Res>(
  method: string,
  handler: UnaryHandler<Req, Res>,
  log: CallLog,
): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => answerOnce(call, callback, method, log, (context) => handler(call.request, context));
}

/**
 * The messages of a client stream, cut (the iteration throws DeadlineError) when the client
 * sends nothing for `idleMs` while the handler waits for it: a stalled uploader would otherwise
 * hold its upload, its buffers and a call slot for good. Time the handler spends on a message
 * does not count.
 */
function idleBounded<Req>(
  call: ServerReadableStream<Req, unknown>,
  idleMs: number,
  method: string,
): AsyncIterable<Req> {
  return {
    async *[Symbol.asyncIterator]() {
      const messages = call[Symbol.asyncIterator]() as AsyncIterator<Req>;
      for (;;) {
        const timer = setTimeout(() => {
          call.destroy(new DeadlineError(`${method}: the client sent nothing for ${idleMs} ms; the call is cut`));
        }, idleMs);
        let next: IteratorResult<Req>;
        try {
          next = await messages.next();
        } finally {
          clearTimeout(timer);
        }
        if (next.done === true) return;
        yield next.value;
      }
    },
  };
}

/** Adapts an async client-stream handler: answers exactly once, mapping every throw. */
export function clientStream<Req, Res>(
  method: string,
  handler: ClientStreamHandler<Req, Res>,
  log: CallLog,
  idleMs = Number.POSITIVE_INFINITY,
): (call: ServerReadableStream<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) =>
    answerOnce(
      call,
      callback,
      method,
      log,
      (context) => {
        // A cancelled call's readable side may never end: destroying it makes the iteration throw.
        addAbortSignal(context.signal, call);
        return handler(Number.isFinite(idleMs) ? idleBounded(call, idleMs, method) : call, context);
      },
      true,
    );
}

/** Adapts an async stream handler: ends the stream when it returns, maps a throw to the status. */
export function serverStream<Req, Res>(
  method: string,
  handler: ServerStreamHandler<Req, Res>,
  log: CallLog,
  track?: (call: ServerWritableStream<Req, Res>) => () => void,
): (call: ServerWritableStream<Req, Res>) => void {
  return (call) => {
    const { context, dispose } = contextOf(call);
    const untrack = track?.(call) ?? (() => undefined);
    let pending = 0;
    const sink: StreamSink<Res> = {
      get pending() {
        return pending;
      },
      write(message) {
        if (context.signal.aborted) return Promise.resolve();
        pending += 1;
        return new Promise<void>((resolve) => {
          const flushed = call.write(message, () => {
            pending -= 1;
          });
          if (flushed) {
            resolve();
            return;
          }
          const done = (): void => {
            call.off('drain', done);
            context.signal.removeEventListener('abort', done);
            resolve();
          };
          call.on('drain', done);
          context.signal.addEventListener('abort', done);
        });
      },
    };
    new Promise<void>((resolve) => resolve(handler(call.request, sink, context))).then(
      () => {
        dispose();
        untrack();
        if (!context.signal.aborted) call.end();
      },
      (err: unknown) => {
        dispose();
        untrack();
        if (!context.signal.aborted) call.emit('error', toStatus(err, log, method));
      },
    );
  };
}
