import type { StatusObject, ServiceDefinition } from '@grpc/grpc-js';
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
 * UndecodableMessage, which {@link RequestShape} refuses before any handler sees it.
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
 * One call's request as a whole: INVALID_ARGUMENT (google.rpc.BadRequest, field "": the
 * request itself) where grpc-js would answer INTERNAL or UNIMPLEMENTED for the caller's
 * mistake: a message that did not decode (rule MALFORMED; services registered through
 * {@link tolerantDefinition}), and a unary or server-streaming call that half-closes without
 * a whole message (a frame cut short, or none) or sends a second one (rule MESSAGE_COUNT).
 * The handler never runs, or, in a client stream, is cancelled as when the client goes away.
 * Each check returns the refusal to send, or undefined to pass the event on; once refused,
 * every later event is dropped (`refused`).
 *
 * Not reachable from here: a frame flagged compressed whose bytes do not inflate, and a
 * malformed `grpc-timeout`, which grpc-js answers with INTERNAL below every interceptor.
 */
export class RequestShape {
  private messages = 0;
  refused = false;

  constructor(
    private readonly requestStream: boolean,
    private readonly name: string,
  ) {}

  message(message: unknown): StatusObject | undefined {
    this.messages += 1;
    if (message instanceof UndecodableMessage) {
      const which = this.requestStream ? `message ${this.messages} of the request stream` : 'the request';
      return this.refuse('MALFORMED', `${which} is not a valid protobuf message: ${message.reason}`);
    }
    if (!this.requestStream && this.messages > 1)
      return this.refuse('MESSAGE_COUNT', 'the call carries a second request message; it takes exactly one');
    return undefined;
  }

  halfClose(): StatusObject | undefined {
    if (!this.requestStream && this.messages === 0)
      return this.refuse(
        'MESSAGE_COUNT',
        'the call ended without a whole request message (none was sent, or its frame was cut short)',
      );
    return undefined;
  }

  private refuse(rule: string, description: string): StatusObject {
    this.refused = true;
    return invalidRequestStatus(rule, `${this.name}: ${description}`);
  }
}
