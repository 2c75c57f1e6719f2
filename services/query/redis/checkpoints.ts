import type { Redis } from 'ioredis';
import { parseCheckpoint, parseCheckpointMark, type Checkpoints } from '../read-models/checkpoints';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';
import { mappingOutages } from './errors';

/** The partition checkpoints read from Redis (read-models/checkpoints.ts says what they mean). */
export function createCheckpoints(redis: Redis, layout: KeyLayout): Checkpoints {
  return mappingOutages<Checkpoints>('reading checkpoints', {
    async readAll() {
      // One GET per partition (never an MGET across hash slots); sent back to back, so one
      // round trip on a single Redis.
      const values = await Promise.all(partitionNumbers(layout).map((p) => redis.get(layout.checkpoint(p))));
      return values.map(parseCheckpoint);
    },
    async readMarks() {
      const values = await Promise.all(partitionNumbers(layout).map((p) => redis.get(layout.checkpoint(p))));
      return values.map(parseCheckpointMark);
    },
    async readFor(evalId) {
      return parseCheckpoint(await redis.get(layout.checkpoint(layout.partitionOf(evalId))));
    },
  });
}
