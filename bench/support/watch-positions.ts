import type { ClientReadableStream } from '@grpc/grpc-js';
import type { WatchEvaluationsResponse } from '../../shared/generated/crucible/storage/v1/query_service';

/**
 * A WatchEvaluations firehose that resolves, per position, when the update arrives
 * (process.hrtime.bigint()).
 */
export function watchPositions(stream: ClientReadableStream<WatchEvaluationsResponse>): {
  caughtUp: Promise<void>;
  arrival(position: string): Promise<bigint>;
} {
  const arrived = new Map<string, bigint>();
  const waiting = new Map<string, (at: bigint) => void>();
  let caughtUp: () => void = () => undefined;
  const caughtUpPromise = new Promise<void>((resolve) => (caughtUp = resolve));
  stream.on('data', (message: WatchEvaluationsResponse) => {
    if (message.caughtUp !== undefined) caughtUp();
    if (message.update === undefined) return;
    const at = process.hrtime.bigint();
    const waiter = waiting.get(message.update.position);
    if (waiter !== undefined) waiter(at);
    else arrived.set(message.update.position, at);
  });
  return {
    caughtUp: caughtUpPromise,
    arrival: (position) => {
      const at = arrived.get(position);
      if (at !== undefined) return Promise.resolve(at);
      return new Promise((resolve) => waiting.set(position, resolve));
    },
  };
}
