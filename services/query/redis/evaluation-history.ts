import type { Redis } from 'ioredis';
import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationHistory } from '../read-models/evaluation-history';
import type { KeyLayout } from '../read-models/keys';
import { fromBytes } from '../wire/encoded';
import { mappingOutages } from './errors';

/** Histories read from Redis (read-models/evaluation-history.ts says what they hold). */
export function createEvaluationHistory(redis: Redis, layout: KeyLayout): EvaluationHistory {
  const key = (evalId: string): string => layout.history(layout.partitionOf(evalId), evalId);
  return mappingOutages<EvaluationHistory>('reading an evaluation history', {
    async latest(evalId) {
      const bytes = await redis.lindexBuffer(key(evalId), -1);
      return bytes === null ? undefined : fromBytes(EvaluationUpdate, bytes);
    },
    async after(evalId, revision) {
      const entries = await redis.lrangeBuffer(key(evalId), revision.toString(), -1);
      return entries.map((bytes) => fromBytes(EvaluationUpdate, bytes));
    },
  });
}
