import {
  status as Status,
  Metadata,
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  type ServerInterceptor,
} from '@grpc/grpc-js';
import type { Admission, Gate } from '../auth';
import { toStatus } from './status';
import type { CallLog } from './call-log';
import type { RpcMetrics } from './rpc-metrics';

/** Services every caller may use without a credential: they describe the server, never its data. */
const OPEN_SERVICES = ['/grpc.health.v1.Health/', '/grpc.reflection.'];

/** What the authenticating interceptor hands the call adapters: the caller of each call, by its metadata. */
export interface Admissions {
  readonly interceptor: ServerInterceptor;
  /** The admission of the call whose metadata this is; undefined for a call the interceptor did not admit. */
  of(metadata: Metadata): Admission | undefined;
}

/**
 * Runs the gate on a call's metadata, before anything else of the call happens: its metadata
 * reach the handler (which only then asks for the request) once the caller is admitted, so a
 * call refused (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED) never has its request
 * read or decoded, and takes no share of the byte budget. The admission travels to the call
 * adapter with the metadata; what it holds (an open stream) is released when the call ends.
 * Every call it sees is counted in `rpc` with the status it ended with (its own interceptor
 * would cost each open stream another set of listeners).
 */
export function authenticateCalls(gate: Gate, log: CallLog, rpc: RpcMetrics): Admissions {
  const admissions = new WeakMap<Metadata, Admission>();
  const interceptor: ServerInterceptor = (method, next) => {
    if (OPEN_SERVICES.some((prefix) => method.path.startsWith(prefix))) return new ServerInterceptingCall(next);
    const name = method.path.slice(method.path.lastIndexOf('/') + 1);
    const kind = method.requestStream || method.responseStream ? 'stream' : 'unary';
    const counted = rpc.begin(name, method.responseStream);
    let admission: Admission | undefined;
    let ended = false;
    const end = (code: Status): void => {
      ended = true;
      admission?.release();
      counted(code);
    };
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, pass) => {
        gate
          .admit(name, { metadata, certificate: call.getAuthContext().sslPeerCertificate, peer: call.getPeer() }, kind)
          .then(
            (admitted) => {
              admission = admitted;
              if (ended) {
                admitted.release();
                return;
              }
              admissions.set(metadata, admitted);
              pass(metadata);
            },
            (err: unknown) => {
              if (!ended) call.sendStatus(toStatus(err, log, name));
            },
          );
      })
      // grpc-js ends a call past its deadline by itself, unseen by sendStatus: what is heard
      // then is the cancel, and it is a deadline.
      .withOnCancel(() => end(pastDeadline(call.getDeadline()) ? Status.DEADLINE_EXCEEDED : Status.CANCELLED))
      .build();
    const responder = new ResponderBuilder()
      .withStart((start) => start(listener))
      .withSendStatus((status, pass) => {
        end(status.code);
        pass(status);
      })
      .build();
    const call = new ServerInterceptingCall(next, responder);
    return call;
  };
  return { interceptor, of: (metadata) => admissions.get(metadata) };
}

function pastDeadline(deadline: Date | number): boolean {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) && at <= Date.now();
}
