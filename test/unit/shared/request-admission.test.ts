import { Metadata, status, type ServerInterceptingCallInterface, type StatusObject } from '@grpc/grpc-js';
import { expect } from 'chai';
import { openGate } from '../../../shared/auth';
import { createCallLog, NO_RPC_METRICS } from '../../../shared/grpc';
import { measuredDefinition } from '../../../shared/grpc/admission';
import { Admissions } from '../../../shared/grpc/authenticate';
import { createByteBudget, type ByteBudget } from '../../../shared/grpc/byte-budget';
import { guardCalls } from '../../../shared/grpc/guard';
import { silentLogger } from '../../../shared/logging';

/** Lets grants already made start their reads (grants resolve promises). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const MAX_MESSAGE = 100;

/** What grpc-js' own call delivers to the interceptors above it (its type is not exported). */
interface InterceptingServerListener {
  onReceiveMetadata(metadata: Metadata): void;
  onReceiveMessage(message: unknown): void;
  onReceiveHalfClose(): void;
  onCancel(): void;
}

/** What a request deserialiser of the server hands grpc-js: the message and its wire size. */
function measured(bytes: number): unknown {
  const definition = measuredDefinition({
    m: {
      path: '/t.T/M',
      requestStream: false,
      responseStream: false,
      requestSerialize: (m: Buffer) => m,
      requestDeserialize: (b: Buffer) => `message of ${b.length} bytes`,
      responseSerialize: (m: Buffer) => m,
      responseDeserialize: (b: Buffer) => b,
    },
  });
  return definition.m?.requestDeserialize(Buffer.alloc(bytes));
}

/**
 * One call through the server's guard (an open gate: every caller admitted), over a stand-in
 * for grpc-js' own call: `reads` counts the reads that got through to it, `arrive` delivers what
 * grpc-js would deliver, and the handler side asks for reads as grpc-js' handlers do (after the
 * metadata and after each message).
 */
function openCall(budget: ByteBudget, requestStream: boolean, readTimeoutMs = 60_000) {
  let listener: InterceptingServerListener | undefined;
  let statusSent: (status: Partial<StatusObject>) => void = () => undefined;
  const inner = {
    reads: 0,
    start: (l: InterceptingServerListener) => void (listener = l),
    startRead: () => void (inner.reads += 1),
    sendStatus: (status: Partial<StatusObject>) => statusSent(status),
    status: new Promise<Partial<StatusObject>>((resolve) => (statusSent = resolve)),
    getAuthContext: () => ({}),
    getPeer: () => '127.0.0.1:1',
    getDeadline: () => Infinity,
  };
  const method = { path: '/t.T/M', requestStream, responseStream: false } as Parameters<
    ReturnType<typeof guardCalls>
  >[0];
  const admissions = new Admissions(openGate(silentLogger), createCallLog(silentLogger), NO_RPC_METRICS);
  const call = guardCalls({ budget, maxMessageBytes: MAX_MESSAGE, readTimeoutMs }, admissions)(
    method,
    inner as unknown as ServerInterceptingCallInterface,
  );
  const handled: unknown[] = [];
  call.start({
    onReceiveMetadata: () => call.startRead(),
    onReceiveMessage: (message: unknown) => {
      handled.push(message);
      call.startRead();
    },
    onReceiveHalfClose: () => handled.push('half-close'),
    onCancel: () => handled.push('cancel'),
  });
  const arrive = (): InterceptingServerListener => {
    if (listener === undefined) throw new Error('the interceptor never started the inner call');
    return listener;
  };
  return {
    inner,
    handled,
    metadata: () => arrive().onReceiveMetadata(new Metadata()),
    message: (bytes: number) => arrive().onReceiveMessage(measured(bytes)),
    halfClose: () => arrive().onReceiveHalfClose(),
    end: () => arrive().onCancel(),
  };
}

describe("request admission (the server guard's reads)", () => {
  it("holds a unary call's read until the largest message fits, and counts its request until the call ends", async () => {
    const budget = createByteBudget(150);
    const a = openCall(budget, false);
    const b = openCall(budget, false);
    a.metadata();
    b.metadata();
    await settle();
    expect([a.inner.reads, b.inner.reads], 'reads that reached grpc-js').to.deep.equal([1, 0]);
    expect(budget.waiting).to.equal(1);

    // The handler gets the message itself; the read for the half-close goes through at once.
    a.message(30);
    expect(a.handled).to.deep.equal(['message of 30 bytes']);
    expect(a.inner.reads).to.equal(2);
    // Until the half-close a second message could still come, read under the same reservation.
    await settle();
    expect(b.inner.reads).to.equal(0);

    a.halfClose();
    await settle();
    expect(b.inner.reads, 'admitted once A holds only its 30 bytes').to.equal(1);
    expect(budget.reserved).to.equal(30 + MAX_MESSAGE);

    a.end();
    expect(budget.reserved).to.equal(MAX_MESSAGE);
    b.end();
    expect(budget.reserved).to.equal(0);
    expect(budget.peakReserved).to.equal(130);
  });

  it('cuts a call whose message does not arrive in time once read (a trickling client), giving its share to the next', async () => {
    const budget = createByteBudget(MAX_MESSAGE);
    const slow = openCall(budget, false, 20);
    const next = openCall(budget, false, 60_000);
    slow.metadata();
    next.metadata();
    await settle();
    expect([slow.inner.reads, next.inner.reads]).to.deep.equal([1, 0]);
    const cut = await slow.inner.status;
    expect(cut.code).to.equal(status.DEADLINE_EXCEEDED);
    expect(cut.details).to.include('REQUEST_READ_TIMEOUT_MS');
    await settle();
    expect(next.inner.reads, 'admitted once the trickling call gave its share back').to.equal(1);
    expect(budget.reserved).to.equal(MAX_MESSAGE);
    // A message in time stops the clock: the call is never cut.
    next.message(10);
    next.halfClose();
    next.end();
    expect(budget.reserved).to.equal(0);
  });

  it('lets a call that ends while it waits (deadline, cancel) leave the queue without ever being read', async () => {
    const budget = createByteBudget(MAX_MESSAGE);
    const a = openCall(budget, false);
    const waiting = openCall(budget, false);
    a.metadata();
    waiting.metadata();
    await settle();
    expect(budget.waiting).to.equal(1);

    waiting.end();
    expect(budget.waiting).to.equal(0);
    a.end();
    await settle();
    expect(waiting.inner.reads).to.equal(0);
    expect(budget.reserved).to.equal(0);
  });

  it('gives back the reservation of a call that ends mid-read, and of one that ends after being admitted', async () => {
    const budget = createByteBudget(MAX_MESSAGE);
    const a = openCall(budget, false);
    a.metadata();
    // Ends before its grant has started the read: the grant must not start it afterwards.
    a.end();
    await settle();
    expect(a.inner.reads).to.equal(0);
    expect(budget.reserved).to.equal(0);

    const b = openCall(budget, false);
    b.metadata();
    await settle();
    expect(b.inner.reads).to.equal(1);
    b.end(); // e.g. the message was too large, or did not decode: grpc-js or the guard's shape check ended it
    expect(budget.reserved).to.equal(0);
  });

  it('admits each message of a client stream in turn and gives it back once it is in', async () => {
    const budget = createByteBudget(MAX_MESSAGE);
    const stream = openCall(budget, true);
    const unary = openCall(budget, false);
    stream.metadata();
    unary.metadata();
    await settle();
    expect([stream.inner.reads, unary.inner.reads]).to.deep.equal([1, 0]);

    // The stream's first message is in: its bytes go back, and the unary call, first in line, is read.
    stream.message(40);
    expect(stream.handled).to.deep.equal(['message of 40 bytes']);
    await settle();
    expect([stream.inner.reads, unary.inner.reads]).to.deep.equal([1, 1]);

    unary.message(10);
    unary.halfClose();
    await settle();
    expect(stream.inner.reads, 'the next message waits: 10 bytes are held and the largest would not fit').to.equal(1);
    unary.end();
    await settle();
    expect(stream.inner.reads).to.equal(2);

    stream.halfClose();
    expect(budget.reserved).to.equal(0);
    stream.end();
    expect(budget.reserved).to.equal(0);
  });
});
