import type { Redis } from 'ioredis';
import type { RecordedEvent } from '../../../shared/domain';
import type { Logger } from '../../../shared/logging';
import { minCheckpoint, createCheckpoints } from '../read-models/checkpoints';
import type { KeyLayout } from '../read-models/keys';
import { createProjectionApplier, type ProjectionStore } from './applier';
import type { EventLog } from './event-log';

export interface RebuildResult {
  readonly deletedKeys: number;
  readonly events: number;
  readonly checkpoint: bigint;
  readonly seconds: number;
}

/**
 * Deletes every read-model key of the layout's prefix and projects the event log again from
 * position 0. Batches are pipelined: batch n+1 is read from PostgreSQL while batch n is being
 * written to Redis. Each batch goes through the same compare-and-set as the live projection.
 */
export async function rebuildReadModels(deps: {
  readonly redis: Redis;
  readonly layout: KeyLayout;
  readonly eventLog: EventLog;
  readonly store: ProjectionStore;
  readonly logger: Logger;
  readonly batchSize?: number;
  readonly onProgress?: (applied: number, position: bigint) => void;
}): Promise<RebuildResult> {
  const { redis, layout, eventLog, logger } = deps;
  const batchSize = deps.batchSize ?? 2000;
  const started = process.hrtime.bigint();

  let deletedKeys = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', layout.scanPattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) deletedKeys += await redis.unlink(...keys);
  } while (cursor !== '0');
  logger.info('read models deleted', { deletedKeys, prefix: layout.prefix });

  const applier = createProjectionApplier({ store: deps.store, eventLog, layout, logger });
  const checkpoints = createCheckpoints(redis, layout);
  let events = 0;
  let from = 0n;
  let nextBatch: Promise<RecordedEvent[]> = eventLog.readAfter(from, batchSize);
  for (;;) {
    const batch = await nextBatch;
    const last = batch[batch.length - 1];
    if (last === undefined) break;
    from = BigInt(last.position);
    nextBatch = eventLog.readAfter(from, batchSize);
    // Attach a handler now: if applying fails, the prefetch must not become an unhandled rejection.
    nextBatch.catch(() => undefined);
    const result = await applier.apply(batch);
    events += result.applied;
    deps.onProgress?.(events, from);
    if (batch.length < batchSize) break;
  }
  const checkpoint = minCheckpoint(await checkpoints.readAll());
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  logger.info('read models rebuilt', { events, checkpoint: checkpoint.toString(), seconds });
  return { deletedKeys, events, checkpoint, seconds };
}
