import type { RedisClient } from '../../../shared/redis';
import { parseCheckpointMark, type CheckpointMark, type Checkpoints } from '../read-models/checkpoints';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';
import { mappingOutages } from './errors';

/** The partition checkpoints read from Redis (read-models/checkpoints.ts says what they mean). */
export function createCheckpoints(redis: RedisClient, layout: KeyLayout): Checkpoints {
  const readMarks = async (): Promise<CheckpointMark[]> => {
    // One GET per partition (never an MGET across hash slots); sent back to back, so one
    // round trip on a single Redis.
    const values = await Promise.all(partitionNumbers(layout).map((p) => redis.get(layout.checkpoint(p))));
    return values.map(parseCheckpointMark);
  };
  return mappingOutages<Checkpoints>('reading checkpoints', {
    readMarks,
    readAll: async () => (await readMarks()).map((mark) => mark.position),
  });
}
