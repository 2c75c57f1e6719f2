import { Redis } from 'ioredis';
import { openLoop, type OpenLoopResult } from '../support/load';
import { createLatencyRecorder, type LatencySummary } from '../support/stats';

/**
 * Floor for update propagation: Redis SPUBLISH (sharded pub/sub, as the services announce
 * changes) on one connection → message on a subscribed
 * connection, at a fixed rate; latency from just before PUBLISH to the message's arrival.
 */
export async function measurePubSubRoundTrip(
  redisUrl: string,
  channel: string,
  ratePerSecond: number,
  durationMs: number,
): Promise<{ latency: LatencySummary; rate: OpenLoopResult }> {
  const publisher = new Redis(redisUrl);
  // A subscribed connection can run no other command, hence its own.
  const subscriber = new Redis(redisUrl);
  try {
    await subscriber.ssubscribe(channel);
    const sentAt = new Map<string, bigint>();
    const latency = createLatencyRecorder();
    const pending = new Map<string, () => void>();
    subscriber.on('smessage', (_channel: string, message: string) => {
      const sent = sentAt.get(message);
      if (sent === undefined) return;
      latency.recordNs(Number(process.hrtime.bigint() - sent));
      pending.get(message)?.();
    });
    // A 200-byte payload, about the size of a change message.
    const padding = 'x'.repeat(200);
    const rate = await openLoop({
      ratePerSecond,
      durationMs,
      op: (index) =>
        new Promise<void>((resolve, reject) => {
          const message = `${index}:${padding}`;
          pending.set(message, resolve);
          sentAt.set(message, process.hrtime.bigint());
          publisher.spublish(channel, message).catch(reject);
        }),
    });
    return { latency: latency.summary(), rate };
  } finally {
    subscriber.disconnect();
    publisher.disconnect();
  }
}
