import type { ServerUnaryCall, ServerWritableStream, sendUnaryData, Metadata } from '@grpc/grpc-js';
import type { Logger } from '../logging';
import { toStatus } from './status';

/** What a handler may know of its call: a signal that fires when the client goes away. */
export interface CallContext {
  readonly signal: AbortSignal;
  /** The call's deadline, or undefined when the client set none. */
  readonly deadline: Date | undefined;
  readonly metadata: Metadata;
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

function deadlineOf(call: { getDeadline(): Date | number }): Date | undefined {
  const deadline = call.getDeadline();
  if (deadline instanceof Date) return deadline;
  return Number.isFinite(deadline) ? new Date(deadline) : undefined;
}

function contextOf(call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>): {
  context: CallContext;
  dispose: () => void;
} {
  const controller = new AbortController();
  const onCancel = (): void => controller.abort();
  call.on('cancelled', onCancel);
  return {
    context: { signal: controller.signal, deadline: deadlineOf(call), metadata: call.metadata },
    dispose: () => call.off('cancelled', onCancel),
  };
}

/** Adapts an async handler to grpc-js: answers the callback exactly once, mapping every throw. */
export function unary<Req, Res>(
  method: string,
  handler: UnaryHandler<Req, Res>,
  logger: Logger,
): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => {
    const { context, dispose } = contextOf(call);
    // Through a promise so that a synchronous throw is mapped too, never left to grpc-js.
    new Promise<Res>((resolve) => resolve(handler(call.request, context))).then(
      (response) => {
        dispose();
        callback(null, response);
      },
      (err: unknown) => {
        dispose();
        callback(toStatus(err, logger, method));
      },
    );
  };
}

/** Adapts an async stream handler: ends the stream when it returns, maps a throw to the status. */
export function serverStream<Req, Res>(
  method: string,
  handler: ServerStreamHandler<Req, Res>,
  logger: Logger,
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
        if (!context.signal.aborted) call.emit('error', toStatus(err, logger, method));
      },
    );
  };
}
