import {
  status as Status,
  type Metadata,
  type ServerInterceptingCall,
  type ServerMethodDefinition,
  type StatusObject,
} from '@grpc/grpc-js';
import type { Admission, Gate } from '../auth';
import { toStatus } from './status';
import type { CallLog } from './call-log';
import type { RpcMetrics } from './rpc-metrics';

/** Services every caller may use without a credential: they describe the server, never its data. */
const OPEN_SERVICES = ['/grpc.health.v1.Health/', '/grpc.reflection.'];

/** The call a {@link CallAuthentication} admits (the server's guard, grpc/guard.ts). */
export interface AuthenticatingCall {
  getAuthContext(): ReturnType<ServerInterceptingCall['getAuthContext']>;
  getPeer(): string;
  /** The caller is admitted: its metadata go on to the handler, which only then asks for the request. */
  passMetadata(metadata: Metadata): void;
  sendStatus(status: StatusObject): void;
}

/**
 * The gate of a server's calls, and the caller of each call it admitted, by the call's metadata
 * (the call adapters of handlers.ts find it there).
 */
export class Admissions {
  private readonly admitted = new WeakMap<Metadata, Admission>();

  constructor(
    readonly gate: Gate,
    readonly log: CallLog,
    readonly rpc: RpcMetrics,
  ) {}

  /** The admission of the call whose metadata this is; undefined for a call the guard did not admit. */
  of(metadata: Metadata): Admission | undefined {
    return this.admitted.get(metadata);
  }

  /** What authenticates one call; undefined for a call to an open service (health, reflection). */
  begin(method: ServerMethodDefinition<unknown, unknown>, name: string): CallAuthentication | undefined {
    if (OPEN_SERVICES.some((prefix) => method.path.startsWith(prefix))) return undefined;
    const kind = method.requestStream || method.responseStream ? 'stream' : 'unary';
    return new CallAuthentication(this, name, kind, this.rpc.begin(name, method.responseStream));
  }

  /** Called by CallAuthentication only. */
  remember(metadata: Metadata, admission: Admission): void {
    this.admitted.set(metadata, admission);
  }
}

/**
 * Runs the gate on one call's metadata, before anything else of the call happens: its metadata
 * reach the handler (which only then asks for the request) once the caller is admitted, so a
 * call refused (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED) never has its request
 * read or decoded, and takes no share of the byte budget. The admission travels to the call
 * adapter with the metadata; what it holds (an open stream) is released when the call ends.
 * Every call it sees is counted in `rpc` with the status it ended with.
 */
export class CallAuthentication {
  private admission: Admission | undefined;
  private over = false;

  constructor(
    private readonly admissions: Admissions,
    private readonly name: string,
    private readonly kind: 'unary' | 'stream',
    private readonly counted: (code: Status) => void,
  ) {}

  metadata(metadata: Metadata, call: AuthenticatingCall): void {
    const { gate, log } = this.admissions;
    gate
      .admit(
        this.name,
        { metadata, certificate: call.getAuthContext().sslPeerCertificate, peer: call.getPeer() },
        this.kind,
      )
      .then(
        (admitted) => {
          this.admission = admitted;
          if (this.over) {
            admitted.release();
            return;
          }
          this.admissions.remember(metadata, admitted);
          call.passMetadata(metadata);
        },
        (err: unknown) => {
          if (!this.over) call.sendStatus(toStatus(err, log, this.name));
        },
      );
  }

  /** The call ended with `code`: the first end counts, and releases what the admission holds. */
  ended(code: Status): void {
    if (this.over) return;
    this.over = true;
    this.admission?.release();
    this.counted(code);
  }

  /**
   * The call ended without a status of ours: the client went away, or grpc-js ended it past its
   * deadline by itself (unseen by sendStatus), which is a deadline.
   */
  cancelled(deadline: Date | number): void {
    this.ended(pastDeadline(deadline) ? Status.DEADLINE_EXCEEDED : Status.CANCELLED);
  }
}

function pastDeadline(deadline: Date | number): boolean {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) && at <= Date.now();
}
