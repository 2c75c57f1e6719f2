import type { RedisClient } from '../../../shared/redis';
import { UnavailableError } from '../../../shared/errors';
import { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import { parseCheckpoint } from '../read-models/checkpoints';
import type { KeyLayout } from '../read-models/keys';
import { fromBytes, undecodable as unreadableRecord, type Encoded } from '../wire/encoded';
import { evaluationInResponse } from '../wire/readability';
import { mappingOutages } from './errors';
import type { UndecodableEntries } from './undecodable-entries';

/**
 * Records read from Redis (read-models/evaluation-record.ts says what they hold). A record no
 * client could decode is reported to `undecodable`: `get` refuses it as UNAVAILABLE, and
 * `getMany` hands it out marked `unreadable` (its message holds the id only), which a list
 * leaves out; it is not "missing" (the record is there).
 */
export function createEvaluationRecords(
  redis: RedisClient,
  layout: KeyLayout,
  undecodable: UndecodableEntries,
): EvaluationRecords {
  const read = (key: string, evalId: string, bytes: Buffer): Encoded<Evaluation> => {
    const reason = evaluationInResponse(bytes);
    if (reason === undefined) return fromBytes(Evaluation, bytes);
    undecodable.report({ key, reason });
    return unreadableRecord(bytes, Evaluation.fromPartial({ evalId }), reason);
  };
  return mappingOutages<EvaluationRecords>('reading evaluation records', {
    async get(evalId) {
      const partition = layout.partitionOf(evalId);
      const key = layout.record(partition, evalId);
      const [bytes, checkpointBytes] = await redis.mgetBuffer(key, layout.checkpoint(partition));
      const checkpoint = parseCheckpoint(checkpointBytes?.toString() ?? null);
      if (bytes === null || bytes === undefined) return { record: undefined, checkpoint };
      const record = read(key, evalId, bytes);
      if (record.unreadable !== undefined) {
        throw new UnavailableError(
          `evaluation ${evalId}'s record cannot be decoded by a client (${record.unreadable}); it is left out, and the server log says where`,
        );
      }
      return { record, checkpoint };
    },
    async getMany(partition, evalIds) {
      if (evalIds.length === 0) return [];
      // One MGET per partition: its keys share a hash slot.
      const keys = evalIds.map((id) => layout.record(partition, id));
      const values = await redis.mgetBuffer(...keys);
      return values.map((bytes, i) => (bytes === null ? undefined : read(keys[i] ?? '', evalIds[i] ?? '', bytes)));
    },
  });
}
