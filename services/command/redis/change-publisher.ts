import type { RedisClient } from '../../../shared/redis';
import { changeChannel, encodeChange } from '../../../shared/changes';
import type { RecordedEvent } from '../../../shared/domain';
import { partitionOf } from '../../../shared/partitions';
import type { EventPublisher } from '../application/ports';

interface Pending {
  readonly channel: string;
  readonly message: Buffer | string;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Publishes committed events on their partition's change channel (SPUBLISH: see
 * shared/changes), so READ_MODEL_PARTITIONS must be the query side's. The client must be created with
 * `enableOfflineQueue: false`, so that while Redis is down a publish fails at once instead of
 * queueing: the command has already succeeded, and the query side catches up from the log.
 *
 * Publication is batched as the writes are: the events of one group commit are announced in
 * the same turn of the event loop, and the publishes of one turn go to Redis as one pipeline
 * per channel (one write to the socket, one round trip; a cluster's pipeline must stay on one
 * node), each in the order they were asked for.
 */
export function createRedisChangePublisher(redis: RedisClient, keyPrefix: string, partitions: number): EventPublisher {
  const channels = Array.from({ length: partitions }, (_, p) => changeChannel(keyPrefix, p));
  let pending: Pending[] = [];

  async function publishOn(channel: string, batch: readonly Pending[]): Promise<void> {
    try {
      const pipeline = redis.pipeline();
      for (const { message } of batch) pipeline.spublish(channel, message);
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

  async function flush(): Promise<void> {
    const byChannel = new Map<string, Pending[]>();
    for (const p of pending) {
      const batch = byChannel.get(p.channel);
      if (batch === undefined) byChannel.set(p.channel, [p]);
      else batch.push(p);
    }
    pending = [];
    await Promise.all([...byChannel].map(([channel, batch]) => publishOn(channel, batch)));
  }

  return {
    publish(event: RecordedEvent, traceparent?: string) {
      return new Promise<void>((resolve, reject) => {
        const channel = channels[partitionOf(event.evalId, partitions)] as string;
        pending.push({ channel, message: encodeChange(event, traceparent), resolve, reject });
        if (pending.length === 1) setImmediate(() => void flush());
      });
    },
  };
}
