import type { Redis } from 'ioredis';
import { changeChannel, encodeChange } from '../../../shared/changes';
import type { EventPublisher } from '../application/ports';

/**
 * Publishes committed events on the change channel. The client must be created with
 * `enableOfflineQueue: false`, so that while Redis is down a publish fails at once instead of
 * queueing: the command has already succeeded, and the query side catches up from the log.
 */
export function createRedisChangePublisher(redis: Redis, keyPrefix: string): EventPublisher {
  const channel = changeChannel(keyPrefix);
  return {
    async publish(event) {
      await redis.publish(channel, encodeChange(event));
    },
  };
}
