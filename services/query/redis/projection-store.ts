import type { RedisClient } from '../../../shared/redis';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { UnavailableError } from '../../../shared/errors';
import type { ProjectionStore } from '../projection/applier';
import type { PartitionSnapshot } from '../projection/plan';
import { parseCheckpoint } from '../read-models/checkpoints';
import { decodeRecord } from '../read-models/evaluation-record';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';
import { encodePartitionWrite } from '../read-models/write-ops';
import { createApplyScript } from './apply-script';

/** The projection's view of Redis: atomic per-partition reads and compare-and-set writes. */
export function createRedisProjectionStore(
  redis: RedisClient,
  layout: KeyLayout,
  changeLogRetention: number,
): ProjectionStore {
  const applyScript = createApplyScript(redis);
  return {
    async load(evalIdsByPartition) {
      // One MULTI per partition (its keys share a slot), all sent back to back: one round trip.
      return Promise.all(
        partitionNumbers(layout).map(async (p): Promise<PartitionSnapshot> => {
          const ids = evalIdsByPartition.get(p) ?? [];
          const tx = redis.multi().get(layout.checkpoint(p));
          if (ids.length > 0) tx.mgetBuffer(...ids.map((id) => layout.record(p, id)));
          const replies = await tx.exec();
          if (replies === null) throw new UnavailableError('read-model transaction was aborted');
          for (const [err] of replies) if (err !== null) throw err;
          const checkpoint = parseCheckpoint(replies[0]?.[1] as string | null);
          const states = new Map<string, Evaluation>();
          const records = (replies[1]?.[1] ?? []) as (Buffer | null)[];
          records.forEach((bytes, i) => {
            const id = ids[i];
            if (bytes === null || id === undefined) return;
            // A record that does not decode is as good as lost: without its state the fold
            // refuses the next event (FoldError) and the applier takes the state from the log.
            try {
              states.set(id, decodeRecord(bytes));
            } catch {
              // left out
            }
          });
          return { checkpoint, states };
        }),
      );
    },
    async write(writes, fenceToken) {
      return Promise.all(
        writes.map((write) =>
          applyScript(
            encodePartitionWrite(
              write,
              {
                checkpoint: layout.checkpoint(write.partition),
                fence: layout.fence(write.partition),
                counts: layout.indexCounts(write.partition),
              },
              changeLogRetention,
              fenceToken,
            ),
          ),
        ),
      );
    },
  };
}
