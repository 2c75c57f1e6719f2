import { isCluster, type RedisClient } from '../../../shared/redis';
import { announcedLogsAppended, announcedPosition, announcedTraceparent } from '../../../shared/changes';
import type { LogStream } from '../../../shared/domain';
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
 * Listens to the command side's change channels (SSUBSCRIBE, one per read-model partition:
 * shared/changes) on a dedicated client (a subscribed connection can run no other command; on
 * a cluster, ioredis keeps one such connection per shard and follows the slots when they move). A message is only a wake-up call: `onChange` gets the
 * position it announces, nothing else of it is believed. A message that names no position
 * (garbage, a forged or older format) is dropped and counted, logged once per minute at most.
 * After a reconnect, or a cluster's subscribers being set up again after a topology change
 * (messages may have been lost meanwhile), `onReconnect` asks for a catch-up.
 */
const MALFORMED_LOG_INTERVAL_MS = 60_000;

export function subscribeToChanges(
  subscriber: RedisClient,
  channels: readonly string[],
  handlers: {
    onChange(position: bigint, traceparent: string | undefined): void;
    /** The message announces that `evalId` stored some of its `stream` log (a hint for live/log-hints.ts). */
    onLogsAppended(evalId: string, stream: LogStream): void;
    onReconnect(): void;
  },
  logger: Logger,
  clock: () => number = Date.now,
): ChangeSubscription {
  const listened = new Set(channels);
  // A cluster's subscribers are connections of their own, set up again (and re-subscribed)
  // after each topology change; one Redis' subscriber is the client's own connection.
  const readyEvent = isCluster(subscriber) ? 'subscribersReady' : 'ready';
  let readyOnce = subscriber.status === 'ready';
  let malformed = 0;
  let malformedLoggedAt = -Infinity;
  const onMessage = (from: string, message: string): void => {
    if (!listened.has(from)) return;
    const position = announcedPosition(message);
    if (position === undefined) {
      malformed += 1;
      if (clock() - malformedLoggedAt >= MALFORMED_LOG_INTERVAL_MS) {
        malformedLoggedAt = clock();
        logger.warn('ignoring malformed change messages', { channel: from, malformedSoFar: malformed });
      }
      return;
    }
    handlers.onChange(position, announcedTraceparent(message));
    const appended = announcedLogsAppended(message);
    if (appended !== undefined) handlers.onLogsAppended(appended.evalId, appended.stream);
  };
  const onReady = (): void => {
    if (readyOnce) {
      handlers.onReconnect();
      // ioredis says a cluster's subscribers are ready before its own re-SSUBSCRIBE is answered,
      // and forgets a channel whose slot had no owner when first asked: ask again (a repeat is
      // a no-op for Redis).
      if (isCluster(subscriber)) void subscribe();
    }
    readyOnce = true;
  };
  subscriber.on('smessage', onMessage);
  subscriber.on(readyEvent, onReady);
  // One SSUBSCRIBE per channel: on a cluster the channels live on different shards.
  const subscribe = (): Promise<void> =>
    Promise.all(channels.map((channel) => subscriber.ssubscribe(channel))).then(
      () => undefined,
      (err: unknown) => {
        // ioredis re-subscribes by itself once the connection is back; the timer covers the gap.
        logger.warn('could not subscribe to changes yet', { channels: channels.length, err });
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
      subscriber.off('smessage', onMessage);
      subscriber.off(readyEvent, onReady);
      await Promise.all(channels.map((channel) => subscriber.sunsubscribe(channel))).catch(() => undefined);
    },
  };
}
