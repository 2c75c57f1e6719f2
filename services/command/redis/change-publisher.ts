import type { Redis } from 'ioredis';
import { changeChannel, encodeChange } from '../../../shared/changes';
import type { RecordedEvent } from '../../../shared/domain';
import type { EventPublisher } from '../application/ports';

interface Pending {
  readonly message: Buffer | string;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Publishes committed events on the change channel. The client must be created with
 * `enableOfflineQueue: false`, so that while Redis is down a publish fails at once instead of
 * queueing: the command has already succeeded, and the query side catches up from the log.
 *
 * Publication is batched as the writes are: the events of one group commit are announced in
 * the same turn of the event loop, and the publishes of one turn go to Redis as one pipeline
 * (one write to the socket, one round trip), in the order they were asked for.
 */
export function createRedisChangePublisher(redis: Redis, keyPrefix: string): EventPublisher {
  const channel = changeChannel(keyPrefix);
  let pending: Pending[] = [];

  async function flush(): Promise<void> {
    const batch = pending;
    pending = [];
    try {
      const pipeline = redis.pipeline();
      for (const { message } of batch) pipeline.publish(channel, message);
      const replies = (await pipeline.exec()) ?? [];
      batch.forEach((p, i) => {
        const err = replies[i]?.[0];
        if (err) p.reject(err);
        else p.resolve();
      });
    } catch (err) {
      for (const p of batch) p.reject(err);
    }
  }

  return {
    publish(event: RecordedEvent, traceparent?: string) {
      return new Promise<void>((resolve, reject) => {
        pending.push({ message: encodeChange(event, traceparent), resolve, reject });
        if (pending.length === 1) setImmediate(() => void flush());
      });
    },
  };
}
