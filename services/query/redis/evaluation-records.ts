import type { Redis } from 'ioredis';
import { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import type { KeyLayout } from '../read-models/keys';
import { fromBytes } from '../wire/encoded';
import { mappingOutages } from './errors';

/** Records read from Redis (read-models/evaluation-record.ts says what they hold). */
export function createEvaluationRecords(redis: Redis, layout: KeyLayout): EvaluationRecords {
  return mappingOutages<EvaluationRecords>('reading evaluation records', {
    async get(evalId) {
      const bytes = await redis.getBuffer(layout.record(layout.partitionOf(evalId), evalId));
      return bytes === null ? undefined : fromBytes(Evaluation, bytes);
    },
    async getMany(partition, evalIds) {
      if (evalIds.length === 0) return [];
      // One MGET per partition: its keys share a hash slot.
      const values = await redis.mgetBuffer(...evalIds.map((id) => layout.record(partition, id)));
      return values.map((bytes) => (bytes === null ? undefined : fromBytes(Evaluation, bytes)));
    },
  });
}
