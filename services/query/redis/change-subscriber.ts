import type { Redis } from 'ioredis';
import { changeChannel, decodeChange } from '../../../shared/changes';
import type { RecordedEvent } from '../../../shared/domain';
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
 * connection can run no other command). Messages are the projection's fast path and wake-up
 * signal; after a reconnect (messages may have been lost meanwhile) `onReconnect` asks for a
 * catch-up.
 */
export function subscribeToChanges(
  subscriber: Redis,
  keyPrefix: string,
  handlers: { onChange(event: RecordedEvent, bytes: number): void; onReconnect(): void },
  logger: Logger,
): ChangeSubscription {
  const channel = changeChannel(keyPrefix);
  let readyOnce = subscriber.status === 'ready';
  const onMessage = (from: string, message: string): void => {
    if (from !== channel) return;
    const event = decodeChange(message);
    if (event === undefined) {
      logger.warn('ignoring a malformed change message', { channel });
      return;
    }
    handlers.onChange(event, message.length);
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
