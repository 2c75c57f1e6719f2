import {
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  type ServerInterceptor,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import { invalidRequestStatus } from './status';

/**
 * What a request deserialiser returns instead of throwing. grpc-js answers a throw with
 * INTERNAL ("Error deserializing request"), as the gRPC status-code table says; but bytes that
 * are not the request are the caller's error, and INTERNAL tells it the server is at fault and
 * a retry may help.
 */
class UndecodableMessage {
  constructor(readonly reason: string) {}
}

/**
 * `definition` with request deserialisers that never throw: a message that does not decode
 * (truncated, not protobuf, nested past the decoder's 100 levels) becomes an
 * UndecodableMessage, which {@link refuseMalformedCalls} answers before any handler sees it.
 */
export function tolerantDefinition(definition: ServiceDefinition): ServiceDefinition {
  const methods = Object.entries(definition).map(([name, method]) => {
    const decode = method.requestDeserialize;
    const requestDeserialize = (bytes: Buffer): unknown => {
      try {
        return decode(bytes);
      } catch (err) {
        return new UndecodableMessage(err instanceof Error ? err.message : String(err));
      }
    };
    return [name, { ...method, requestDeserialize }];
  });
  return Object.fromEntries(methods) as ServiceDefinition;
}

/**
 * A server interceptor that answers INVALID_ARGUMENT (google.rpc.BadRequest, field "": the
 * request itself) where grpc-js would answer INTERNAL or UNIMPLEMENTED for the caller's
 * mistake: a message that did not decode (rule MALFORMED; services registered through
 * {@link tolerantDefinition}), and a unary or server-streaming call that half-closes without
 * a whole message (a frame cut short, or none) or sends a second one (rule MESSAGE_COUNT).
 * The handler never runs, or, in a client stream, is cancelled as when the client goes away.
 *
 * Not reachable from here: a frame flagged compressed whose bytes do not inflate, and a
 * malformed `grpc-timeout`, which grpc-js answers with INTERNAL below every interceptor.
 */
export const refuseMalformedCalls: ServerInterceptor = (method, next) => {
  const name = method.path.slice(method.path.lastIndexOf('/') + 1);
  let messages = 0;
  let refused = false;
  const refuse = (rule: string, description: string): void => {
    refused = true;
    call.sendStatus(invalidRequestStatus(rule, `${name}: ${description}`));
  };
  const listener = new ServerListenerBuilder()
    .withOnReceiveMessage((message, pass) => {
      if (refused) return;
      messages += 1;
      if (message instanceof UndecodableMessage) {
        const which = method.requestStream ? `message ${messages} of the request stream` : 'the request';
        refuse('MALFORMED', `${which} is not a valid protobuf message: ${message.reason}`);
      } else if (!method.requestStream && messages > 1) {
        refuse('MESSAGE_COUNT', 'the call carries a second request message; it takes exactly one');
      } else {
        pass(message);
      }
    })
    .withOnReceiveHalfClose((pass) => {
      if (refused) return;
      if (!method.requestStream && messages === 0) {
        refuse(
          'MESSAGE_COUNT',
          'the call ended without a whole request message (none was sent, or its frame was cut short)',
        );
      } else {
        pass();
      }
    })
    .build();
  const call = new ServerInterceptingCall(next, new ResponderBuilder().withStart((start) => start(listener)).build());
  return call;
};
