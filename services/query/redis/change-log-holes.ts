import type { RedisClient } from '../../../shared/redis';
import { minCheckpoint } from '../read-models/checkpoints';
import { createCheckpoints } from './checkpoints';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';

/**
 * Whether `position` is a hole in the change log: every partition's checkpoint is at or past
 * it (so its entry was written, in the same step as the checkpoint), and yet no partition's
 * stream has it — it was deleted (XDEL, a key deleted by hand, a partial restore), not merely
 * not yet written by another partition's share of a step. The checkpoints are read first: an
 * entry written after that read cannot be mistaken for a missing one. Trimmed positions are
 * holes too; callers that know the trim horizon ask about later positions only.
 */
export async function isChangeLogHole(redis: RedisClient, layout: KeyLayout, position: bigint): Promise<boolean> {
  if (minCheckpoint(await createCheckpoints(redis, layout).readAll()) < position) return false;
  const id = `${position}-0`;
  // One command per partition: their keys sit in different slots on a cluster.
  const found = await Promise.all(partitionNumbers(layout).map((p) => redis.xrange(layout.changeLog(p), id, id)));
  return found.every((entries) => entries.length === 0);
}
