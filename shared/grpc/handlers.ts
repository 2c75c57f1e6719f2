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
import type { Caller, Gate } from '../auth';
import { DeadlineError, PermissionDeniedError, UnauthenticatedError } from '../errors';
import type { Logger } from '../logging';
import { Admissions } from './authenticate';
import { createCallLog, type CallLog } from './call-log';
import { toStatus } from './status';
import { NO_RPC_METRICS, type RpcMetrics } from './rpc-metrics';
import { NO_TRACING, type Tracing } from '../tracing';

/**
 * What every call of a server goes through: the gate (run on its metadata by the server's guard,
 * grpc/guard.ts, which createGrpcServer installs, through `admissions`) before its handler, the
 * log after.
 */
export interface Calls {
  readonly log: CallLog;
  readonly gate: Gate;
  readonly admissions: Admissions;
  /** A server span per call (shared/tracing). */
  readonly tracing: Tracing;
}

export function createCalls(
  logger: Logger,
  gate: Gate,
  rpc: RpcMetrics = NO_RPC_METRICS,
  tracing: Tracing = NO_TRACING,
): Calls {
  const log = createCallLog(logger);
  return { log, gate, admissions: new Admissions(gate, log, rpc), tracing };
}

/** What a handler may know of its call: a signal that fires when the client goes away. */
export interface CallContext {
  /** Who makes the call, as the gate let it in. */
  readonly caller: Caller;
  readonly signal: AbortSignal;
  /** The call's deadline, or undefined when the client set none. */
  readonly deadline: Date | undefined;
  readonly metadata: Metadata;
  /** The client's address and port: one per connection. */
  readonly peer: string;
  /** The call's span, as a W3C traceparent: what it causes elsewhere is traced under it. */
  readonly traceparent?: string | undefined;
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

/**
 * Gives the call's context (the caller the gate let in, and a signal that fires when the client
 * goes away) to `run`; `dispose` undoes what the call held, once it is answered. A handler's own
 * PERMISSION_DENIED (the executor binding) is logged and counted as the gate's are.
 */
function admitted<T>(
  call: AnyCall,
  method: string,
  calls: Calls,
): {
  context: (run: (context: CallContext) => Promise<T>) => Promise<T>;
  signal: AbortSignal;
  dispose: (code: Status) => void;
} {
  const controller = new AbortController();
  const onCancel = (): void => controller.abort();
  call.on('cancelled', onCancel);
  const span = calls.tracing.serverSpan(method, call.metadata);
  return {
    signal: controller.signal,
    context: async (run) => {
      const admission = calls.admissions.of(call.metadata);
      // Only a server without the interceptor gets here so: refuse rather than run unchecked.
      if (admission === undefined) throw new UnauthenticatedError(`${method}: the call was not authenticated`);
      const peer = call.getPeer();
      const context = {
        caller: admission.caller,
        signal: controller.signal,
        deadline: deadlineOf(call),
        metadata: call.metadata,
        peer,
        traceparent: span.traceparent,
      };
      try {
        return await run(context);
      } catch (err) {
        if (err instanceof PermissionDeniedError) calls.gate.deniedByHandler(method, admission.caller, peer, err);
        throw err;
      }
    },
    dispose: (code) => {
      call.off('cancelled', onCancel);
      span.end(code);
    },
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
  calls: Calls,
  run: (context: CallContext) => Promise<Res>,
  quietOnCancel = false,
): void {
  const { context, signal, dispose } = admitted<Res>(call, method, calls);
  new Promise<Res>((resolve) => resolve(context(run))).then(
    (response) => {
      dispose(Status.OK);
      callback(null, response);
    },
    (err: unknown) => {
      if (quietOnCancel && signal.aborted) {
        dispose(Status.CANCELLED);
        callback({ code: Status.CANCELLED, details: 'cancelled by the client' });
        return;
      }
      const status = toStatus(err, calls.log, method);
      dispose(status.code);
      callback(status);
    },
  );
}

/** Adapts an async handler to grpc-js: answers the callback exactly once, mapping every throw. */
export function unary<Req, Res>(
  method: string,
  handler: UnaryHandler<Req, Res>,
  calls: Calls,
): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => answerOnce(call, callback, method, calls, (context) => handler(call.request, context));
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
  calls: Calls,
  idleMs = Number.POSITIVE_INFINITY,
): (call: ServerReadableStream<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) =>
    answerOnce(
      call,
      callback,
      method,
      calls,
      (context) => {
        // A cancelled call's readable side may never end: destroying it makes the iteration throw.
        addAbortSignal(context.signal, call);
        return handler(Number.isFinite(idleMs) ? idleBounded(call, idleMs, method) : call, context);
      },
      true,
    );
}

/**
 * A server stream's writes, each resolving once the message is taken (at once, or after the
 * transport drains, or when the client goes away). A class, not an object literal with an
 * accessor: one lives as long as its stream, and V8 keeps such a literal as a dictionary.
 */
class CallSink<Res> implements StreamSink<Res> {
  private unflushed = 0;

  constructor(
    private readonly call: ServerWritableStream<unknown, Res>,
    private readonly signal: AbortSignal,
  ) {}

  get pending(): number {
    return this.unflushed;
  }

  write(message: Res): Promise<void> {
    const { call, signal } = this;
    if (signal.aborted) return Promise.resolve();
    this.unflushed += 1;
    return new Promise<void>((resolve) => {
      const flushed = call.write(message, () => {
        this.unflushed -= 1;
      });
      if (flushed) {
        resolve();
        return;
      }
      const done = (): void => {
        call.off('drain', done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      call.on('drain', done);
      signal.addEventListener('abort', done);
    });
  }
}

/** Adapts an async stream handler: ends the stream when it returns, maps a throw to the status. */
export function serverStream<Req, Res>(
  method: string,
  handler: ServerStreamHandler<Req, Res>,
  calls: Calls,
): (call: ServerWritableStream<Req, Res>) => void {
  return (call) => {
    const { context, signal, dispose } = admitted<void>(call, method, calls);
    const sink = new CallSink(call, signal);
    new Promise<void>((resolve) => resolve(context((ctx) => handler(call.request, sink, ctx)))).then(
      () => {
        dispose(signal.aborted ? Status.CANCELLED : Status.OK);
        if (!signal.aborted) call.end();
      },
      (err: unknown) => {
        if (signal.aborted) {
          dispose(Status.CANCELLED);
          return;
        }
        const status = toStatus(err, calls.log, method);
        dispose(status.code);
        call.emit('error', status);
      },
    );
  };
}
