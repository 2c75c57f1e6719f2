import {
  Metadata,
  ServerInterceptingCall,
  status as Status,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServerMethodDefinition,
  type StatusObject,
} from '@grpc/grpc-js';
import { RequestReads, type ReadBudget, type ReadingCall } from './admission';
import type { Admissions, AuthenticatingCall, CallAuthentication } from './authenticate';
import { RequestShape } from './malformed';

/** What grpc-js's own call tells the interceptor above it (its type is not exported). */
interface InterceptingServerListener {
  onReceiveMetadata(metadata: Metadata): void;
  onReceiveMessage(message: unknown): void;
  onReceiveHalfClose(): void;
  onCancel(): void;
}

/**
 * The one interceptor of every server (createGrpcServer). Each call goes through, in order:
 * - its authentication (authenticate.ts): the gate runs on the metadata, which reach the
 *   handler only once the caller is admitted;
 * - the reads of its request (admission.ts): a message is read only once the server's byte
 *   budget has room for it;
 * - the shape of its request (malformed.ts): a message that does not decode, or a unary call
 *   without exactly one message, is INVALID_ARGUMENT before any handler sees it.
 *
 * One interceptor, not three, and one object per call that is grpc-js's listener as well as
 * its intercepting call: each interceptor costs every call (and so every open stream) an
 * intercepting call, a listener and a responder object and their closures, about 1 KiB a
 * level (docs/benchmarks.md, "Lean streams").
 */
export function guardCalls(reads: ReadBudget, admissions: Admissions): ServerInterceptor {
  // A method's short name, once per method rather than once per call.
  const names = new Map<string, string>();
  return (method, next) => {
    let name = names.get(method.path);
    if (name === undefined) {
      name = method.path.slice(method.path.lastIndexOf('/') + 1);
      names.set(method.path, name);
    }
    return new GuardedCall(next, method, name, reads, admissions.begin(method, name));
  };
}

class GuardedCall
  extends ServerInterceptingCall
  implements InterceptingServerListener, ReadingCall, AuthenticatingCall
{
  /** The handler side's listener, given at start. */
  private listener: InterceptingServerListener | undefined;
  private cancelled = false;
  private readonly reads: RequestReads;
  private readonly shape: RequestShape;

  constructor(
    // The call below (grpc-js's own); ServerInterceptingCall keeps it private.
    private readonly inner: ServerInterceptingCallInterface,
    method: ServerMethodDefinition<unknown, unknown>,
    name: string,
    budget: ReadBudget,
    private readonly authentication: CallAuthentication | undefined,
  ) {
    super(inner);
    this.reads = new RequestReads(budget, method.requestStream, method.path);
    this.shape = new RequestShape(method.requestStream, name);
  }

  // --- the handler side, going down ---

  override start(listener: InterceptingServerListener): void {
    this.listener = listener;
    this.inner.start(this);
  }

  override startRead(): void {
    this.reads.startRead(this);
  }

  override sendStatus(status: StatusObject): void {
    this.authentication?.ended(status.code);
    super.sendStatus(status);
  }

  // --- grpc-js's call, coming up ---

  onReceiveMetadata(metadata: Metadata): void {
    if (this.cancelled) return;
    if (this.authentication === undefined) this.passMetadata(metadata);
    else this.authentication.metadata(metadata, this);
  }

  onReceiveMessage(message: unknown): void {
    if (this.cancelled) return;
    const unwrapped = this.reads.received(message);
    if (this.shape.refused) return;
    const refusal = this.shape.message(unwrapped);
    if (refusal !== undefined) this.sendStatus(refusal);
    else this.listener?.onReceiveMessage(unwrapped);
  }

  onReceiveHalfClose(): void {
    if (this.cancelled) return;
    this.reads.halfClosed();
    if (this.shape.refused) return;
    const refusal = this.shape.halfClose();
    if (refusal !== undefined) this.sendStatus(refusal);
    else this.listener?.onReceiveHalfClose();
  }

  // Every end of a call (the client's cancel, a deadline, a status sent by anyone) comes here.
  onCancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.reads.ended();
    this.authentication?.cancelled(this.getDeadline());
    this.listener?.onCancel();
  }

  // --- what the stages call back ---

  passMetadata(metadata: Metadata): void {
    if (!this.cancelled) this.listener?.onReceiveMetadata(metadata);
  }

  readNow(): void {
    super.startRead();
  }

  cut(details: string): void {
    this.sendStatus({ code: Status.DEADLINE_EXCEEDED, details, metadata: new Metadata() });
  }
}
