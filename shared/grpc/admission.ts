import type { ServiceDefinition } from '@grpc/grpc-js';
import type { ByteBudget, Reservation } from './byte-budget';

/**
 * What a request deserialiser of {@link measuredDefinition} returns: the message and its size
 * on the wire (after any decompression), which the interceptor cannot otherwise see.
 * {@link RequestReads} takes it apart before any other check or handler sees it.
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

/** What the server's reads of requests share: its byte budget and how long a message may take. */
export interface ReadBudget {
  readonly budget: ByteBudget;
  /** The server's `grpc.max_receive_message_length`: all it knows of a message before reading it. */
  readonly maxMessageBytes: number;
  readonly readTimeoutMs: number;
}

/** The call whose reads {@link RequestReads} holds back (the server's guard, grpc/guard.ts). */
export interface ReadingCall {
  /** Lets grpc-js read the next message (the HTTP/2 stream stays paused until then). */
  readNow(): void;
  /** Ends the call DEADLINE_EXCEEDED with `details`. */
  cut(details: string): void;
}

/**
 * One call's reads of its request, each made only once `maxMessageBytes` (all that is known of
 * a message before reading it) are reserved from the server's budget, so that the bytes grpc-js
 * buffers whole before any handler runs are bounded by the budget, not by the calls in flight
 * times the largest message. grpc-js reads a request only when the handler side calls
 * `startRead`, and that is the one place to hold a read back.
 *
 * - A call past the budget waits, first come, first served, with its stream paused: its bytes
 *   stay in the client's HTTP/2 flow-control window (64 KiB per stream by default), not in
 *   our memory. It waits until admitted, or until its deadline or cancellation ends it as
 *   grpc-js ends any call (DEADLINE_EXCEEDED, CANCELLED); no refusal is needed.
 * - Unary and server-streaming calls keep the whole reservation until the half-close (a
 *   second message, which the shape check refuses, is read under it too), then keep the
 *   message's wire size until the call ends: the request stays in memory while its handler
 *   runs, so it counts against what later requests may take.
 * - A client stream reserves for each message in turn and gives it back once the message is
 *   in: holding its messages until the call ends would let one long stream stop itself.
 *   grpc-js reads up to 16 messages ahead of the handler (its object-mode Readable's
 *   highWaterMark) and cannot tell when the handler takes one, so those are not counted here.
 * - Every end of a call (cancel, deadline, a status sent by anyone) reaches `ended`, which
 *   gives the reservation back or leaves the queue.
 * - A message must arrive within `readTimeoutMs` of being admitted: a client that trickles its
 *   request (a byte a second) would otherwise hold its reservation for good, and a few such
 *   clients every byte of the budget. It is cut with DEADLINE_EXCEEDED and gives it back.
 *
 * A class with its state in fields: one lives as long as its call, and closures per call would
 * cost every open stream more (docs/benchmarks.md, "Lean streams").
 */
export class RequestReads {
  // At most one reservation per call: grpc-js has at most one read outstanding.
  private reservation: Reservation | undefined;
  private admitted = false;
  private over = false;
  private receivedBytes = 0;
  private readTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly limits: ReadBudget,
    private readonly requestStream: boolean,
    private readonly path: string,
  ) {}

  /** The handler side asks for the next message. */
  startRead(call: ReadingCall): void {
    if (this.over || this.admitted) {
      call.readNow();
      return;
    }
    // Asked again while waiting: the read starts once, when admitted, which is all grpc-js needs.
    if (this.reservation !== undefined) return;
    const asked = this.limits.budget.reserve(this.limits.maxMessageBytes);
    this.reservation = asked;
    void asked.admitted.then(() => {
      if (this.reservation !== asked) return; // ended while the grant was on its way
      this.admitted = true;
      this.readTimer = setTimeout(() => this.timedOut(call), this.limits.readTimeoutMs);
      call.readNow();
    });
  }

  /** A message arrived: the message itself, unwrapped from its measure. */
  received(message: unknown): unknown {
    this.stopReadTimer();
    const measured = message instanceof MeasuredMessage ? message : undefined;
    if (this.requestStream) this.giveBack();
    else this.receivedBytes += measured?.bytes ?? this.limits.maxMessageBytes;
    return measured === undefined ? message : measured.message;
  }

  halfClosed(): void {
    this.stopReadTimer();
    if (this.requestStream) this.giveBack();
    else this.reservation?.shrinkTo(this.receivedBytes);
  }

  /** The call ended, however: nothing more is read, and the bytes go back. */
  ended(): void {
    this.over = true;
    this.giveBack();
  }

  private timedOut(call: ReadingCall): void {
    this.over = true;
    this.giveBack();
    call.cut(
      `${this.path}: the request did not arrive within ${this.limits.readTimeoutMs} ms of being read (REQUEST_READ_TIMEOUT_MS); the call is cut`,
    );
  }

  private stopReadTimer(): void {
    clearTimeout(this.readTimer);
    this.readTimer = undefined;
  }

  private giveBack(): void {
    this.stopReadTimer();
    this.reservation?.release();
    this.reservation = undefined;
    this.admitted = false;
  }
}
