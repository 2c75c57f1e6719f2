import {
  Metadata,
  ResponderBuilder,
  status,
  ServerInterceptingCall,
  ServerListenerBuilder,
  type Responder,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import type { ByteBudget, Reservation } from './byte-budget';

/**
 * What a request deserialiser of {@link measuredDefinition} returns: the message and its size
 * on the wire (after any decompression), which the interceptor cannot otherwise see.
 * {@link admitRequests} takes it apart before any other interceptor or handler sees it.
 */
class MeasuredMessage {
  constructor(
    readonly message: unknown,
    readonly bytes: number,
  ) {}
}

/** `definition` with request deserialisers that also say how many bytes each message was. */
export function measuredDefinition(definition: ServiceDefinition): ServiceDefinition {
  const methods = Object.entries(definition).map(([name, method]) => {
    const decode = method.requestDeserialize;
    const requestDeserialize = (bytes: Buffer): unknown => new MeasuredMessage(decode(bytes), bytes.length);
    return [name, { ...method, requestDeserialize }];
  });
  return Object.fromEntries(methods) as ServiceDefinition;
}

/**
 * A call whose reads go through `admit`. grpc-js reads a request only when the handler side
 * calls `startRead` (the HTTP/2 stream stays paused until then), and an interceptor's
 * Responder has no hook for it, so this is the one place to hold a read back.
 */
class AdmittedCall extends ServerInterceptingCall {
  constructor(
    next: ServerInterceptingCallInterface,
    responder: Responder,
    private readonly admit: (read: () => void, cut: (details: string) => void) => void,
  ) {
    super(next, responder);
  }

  override startRead(): void {
    this.admit(
      () => super.startRead(),
      (details) => this.sendStatus({ code: status.DEADLINE_EXCEEDED, details, metadata: new Metadata() }),
    );
  }
}

/**
 * A server interceptor that reserves `maxMessageBytes` (the server's
 * `grpc.max_receive_message_length`: all it knows of a message before reading it) from
 * `budget` before grpc-js reads a request message, so that the bytes grpc-js buffers whole
 * before any handler runs are bounded by the budget, not by the calls in flight times the
 * largest message. It must be the innermost interceptor (first in the Server's list): it
 * unwraps the messages of a {@link measuredDefinition} before the others see them.
 *
 * - A call past the budget waits, first come, first served, with its stream paused: its bytes
 *   stay in the client's HTTP/2 flow-control window (64 KiB per stream by default), not in
 *   our memory. It waits until admitted, or until its deadline or cancellation ends it as
 *   grpc-js ends any call (DEADLINE_EXCEEDED, CANCELLED); no refusal is needed.
 * - Unary and server-streaming calls keep the whole reservation until the half-close (a
 *   second message, which refuseMalformedCalls refuses, is read under it too), then keep the
 *   message's wire size until the call ends: the request stays in memory while its handler
 *   runs, so it counts against what later requests may take.
 * - A client stream reserves for each message in turn and gives it back once the message is
 *   in: holding its messages until the call ends would let one long stream stop itself.
 *   grpc-js reads up to 16 messages ahead of the handler (its object-mode Readable's
 *   highWaterMark) and an interceptor cannot see when the handler takes one, so those are
 *   not counted here.
 * - Every end of a call (cancel, deadline, a status sent by anyone) reaches onCancel, which
 *   gives the reservation back or leaves the queue.
 * - A message must arrive within `readTimeoutMs` of being admitted: a client that trickles its
 *   request (a byte a second) would otherwise hold its reservation for good, and a few such
 *   clients every byte of the budget. It is cut with DEADLINE_EXCEEDED and gives it back.
 */
export function admitRequests(budget: ByteBudget, maxMessageBytes: number, readTimeoutMs: number): ServerInterceptor {
  return (method, next) => {
    // At most one reservation per call: grpc-js has at most one read outstanding.
    let reservation: Reservation | undefined;
    let admitted = false;
    let ended = false;
    let receivedBytes = 0;
    let readTimer: NodeJS.Timeout | undefined;
    const stopReadTimer = (): void => {
      clearTimeout(readTimer);
      readTimer = undefined;
    };
    const giveBack = (): void => {
      stopReadTimer();
      reservation?.release();
      reservation = undefined;
      admitted = false;
    };

    const admit = (read: () => void, cut: (details: string) => void): void => {
      if (ended || admitted) {
        read();
        return;
      }
      // Asked again while waiting: the read starts once, when admitted, which is all grpc-js needs.
      if (reservation !== undefined) return;
      const asked = budget.reserve(maxMessageBytes);
      reservation = asked;
      void asked.admitted.then(() => {
        if (reservation !== asked) return; // ended while the grant was on its way
        admitted = true;
        readTimer = setTimeout(() => {
          ended = true;
          giveBack();
          cut(
            `${method.path}: the request did not arrive within ${readTimeoutMs} ms of being read (REQUEST_READ_TIMEOUT_MS); the call is cut`,
          );
        }, readTimeoutMs);
        read();
      });
    };

    const listener = new ServerListenerBuilder()
      .withOnReceiveMessage((message, pass) => {
        stopReadTimer();
        const measured = message instanceof MeasuredMessage ? message : undefined;
        if (method.requestStream) giveBack();
        else receivedBytes += measured?.bytes ?? maxMessageBytes;
        pass(measured === undefined ? message : measured.message);
      })
      .withOnReceiveHalfClose((pass) => {
        stopReadTimer();
        if (method.requestStream) giveBack();
        else reservation?.shrinkTo(receivedBytes);
        pass();
      })
      .withOnCancel(() => {
        ended = true;
        giveBack();
      })
      .build();
    return new AdmittedCall(next, new ResponderBuilder().withStart((start) => start(listener)).build(), admit);
  };
}
