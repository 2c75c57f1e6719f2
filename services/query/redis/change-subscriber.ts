import type { Redis } from 'ioredis';
import { announcedPosition, announcedTraceparent, changeChannel } from '../../../shared/changes';
import type { Logger } from '../../../shared/logging';

export interface ChangeSubscription {
  /**
   * Settles once Redis confirmed the subscription (or refused it: then ioredis subscribes again
   * when the connection is back, and the catch-up timer covers the gap). Never rejects.
   */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

/**
 * Listens to the command side's pub/sub channel on a dedicated connection (a subscribed
 * connection can run no other command). A message is only a wake-up call: `onChange` gets the
 * position it announces, nothing else of it is believed. A message that names no position
 * (garbage, a forged or older format) is dropped and counted, logged once per minute at most.
 * After a reconnect (messages may have been lost meanwhile) `onReconnect` asks for a catch-up.
 */
const MALFORMED_LOG_INTERVAL_MS = 60_000;

export function subscribeToChanges(
  subscriber: Redis,
  keyPrefix: string,
  handlers: { onChange(position: bigint, traceparent: string | undefined): void; onReconnect(): void },
  logger: Logger,
  clock: () => number = Date.now,
): ChangeSubscription {
  const channel = changeChannel(keyPrefix);
  let readyOnce = subscriber.status === 'ready';
  let malformed = 0;
  let malformedLoggedAt = -Infinity;
  const onMessage = (from: string, message: string): void => {
    if (from !== channel) return;
    const position = announcedPosition(message);
    if (position === undefined) {
      malformed += 1;
      if (clock() - malformedLoggedAt >= MALFORMED_LOG_INTERVAL_MS) {
        malformedLoggedAt = clock();
        logger.warn('ignoring malformed change messages', { channel, malformedSoFar: malformed });
      }
      return;
    }
    handlers.onChange(position, announcedTraceparent(message));
  };
  const onReady = (): void => {
    if (readyOnce) handlers.onReconnect();
    readyOnce = true;
  };
  subscriber.on('message', onMessage);
  subscriber.on('ready', onReady);
  const subscribe = (): Promise<void> =>
    subscriber.subscribe(channel).then(
      () => undefined,
      (err: unknown) => {
        // ioredis re-subscribes by itself once the connection is back; the timer covers the gap.
        logger.warn('could not subscribe to changes yet', { channel, err });
      },
    );
  // Not before the connection is ready: ioredis 5.8+ may interleave a SUBSCRIBE sent while it
  // connects with its own handshake commands, which then fail "in subscriber mode" and drop
  // the connection, and with it the subscription (redis/ioredis#2037).
  const ready =
    subscriber.status === 'ready'
      ? subscribe()
      : new Promise<void>((resolve) => subscriber.once('ready', () => resolve(subscribe())));
  return {
    ready,
    async close() {
      subscriber.off('message', onMessage);
      subscriber.off('ready', onReady);
      await subscriber.unsubscribe(channel).catch(() => undefined);
    },
  };
}
