import type { Redis } from 'ioredis';
import { UnavailableError } from '../../../shared/errors';
import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationHistory } from '../read-models/evaluation-history';
import type { KeyLayout } from '../read-models/keys';
import { fromBytes, type Encoded } from '../wire/encoded';
import { updateInResponse } from '../wire/readability';
import { mappingOutages } from './errors';
import type { UndecodableEntries } from './undecodable-entries';

/**
 * Histories read from Redis (read-models/evaluation-history.ts says what they hold). An update
 * no client could decode is reported to `undecodable`: left out of a replay, and the latest
 * update refused as UNAVAILABLE rather than answered with an older one.
 */
export function createEvaluationHistory(
  redis: Redis,
  layout: KeyLayout,
  undecodable: UndecodableEntries,
): EvaluationHistory {
  const key = (evalId: string): string => layout.history(layout.partitionOf(evalId), evalId);
  return mappingOutages<EvaluationHistory>('reading an evaluation history', {
    async latest(evalId) {
      // Sent back to back (one round trip); the length after the entry, so that an append in
      // between can only make it longer, never shorter than the entry's revision.
      const [bytes, length] = await Promise.all([redis.lindexBuffer(key(evalId), -1), redis.llen(key(evalId))]);
      if (bytes === null) return undefined;
      const reason = updateInResponse(bytes);
      if (reason === undefined) return { update: fromBytes(EvaluationUpdate, bytes), length: BigInt(length) };
      const revision = BigInt(length);
      undecodable.report({ key: key(evalId), revision, reason });
      throw new UnavailableError(
        `evaluation ${evalId}'s latest update (revision ${revision}) cannot be decoded by a client (${reason}); it is left out, and the server log says where`,
      );
    },
    async after(evalId, revision) {
      const entries = await redis.lrangeBuffer(key(evalId), revision.toString(), -1);
      return entries.flatMap((bytes, i): Encoded<EvaluationUpdate>[] => {
        const reason = updateInResponse(bytes);
        if (reason === undefined) return [fromBytes(EvaluationUpdate, bytes)];
        // List index = revision - 1.
        undecodable.report({ key: key(evalId), revision: revision + BigInt(i) + 1n, reason });
        return [];
      });
    },
  });
}
