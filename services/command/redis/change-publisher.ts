import type { RedisClient } from '../../../shared/redis';
import { changeChannel, encodeChange } from '../../../shared/changes';
import type { RecordedEvent } from '../../../shared/domain';
import { partitionOf } from '../../../shared/partitions';
import type { EventPublisher } from '../application/ports';

interface Pending {
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
 * node). Each channel has at most one pipeline in flight, and what is asked for meanwhile goes
 * in the next: a cluster client retries a pipeline that met MOVED or TRYAGAIN after a later one
 * went out, so two in flight could arrive out of order. Each channel's messages therefore go in
 * the order they were asked for.
 */
export function createRedisChangePublisher(redis: RedisClient, keyPrefix: string, partitions: number): EventPublisher {
  const channels = Array.from({ length: partitions }, (_, p) => changeChannel(keyPrefix, p));
  /** Per channel: what waits for the next pipeline. */
  const waiting = new Map<string, Pending[]>();
  /** Channels with a pipeline in flight (their sender takes what waits when it returns). */
  const sending = new Set<string>();
  let scheduled = false;

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

  async function send(channel: string): Promise<void> {
    sending.add(channel);
    for (let batch = waiting.get(channel); batch !== undefined; batch = waiting.get(channel)) {
      waiting.delete(channel);
      await publishOn(channel, batch);
    }
    sending.delete(channel);
  }

  function flush(): void {
    scheduled = false;
    for (const channel of waiting.keys()) if (!sending.has(channel)) void send(channel);
  }

  return {
    publish(event: RecordedEvent, traceparent?: string) {
      return new Promise<void>((resolve, reject) => {
        const channel = channels[partitionOf(event.evalId, partitions)] as string;
        const batch = waiting.get(channel);
        const pending = { message: encodeChange(event, traceparent), resolve, reject };
        if (batch === undefined) waiting.set(channel, [pending]);
        else batch.push(pending);
        if (!scheduled) {
          scheduled = true;
          setImmediate(flush);
        }
      });
    },
  };
}
