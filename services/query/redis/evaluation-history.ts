import type { RedisClient } from '../../../shared/redis';
import { UnavailableError } from '../../../shared/errors';
import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationHistory } from '../read-models/evaluation-history';
import type { KeyLayout } from '../read-models/keys';
import { fromBytes, type Encoded } from '../wire/encoded';
import { updateInResponse } from '../wire/readability';
import { mappingOutages } from './errors';
import type { UndecodableEntries } from './undecodable-entries';
import { metadataOfUpdate, withMetadata } from '../wire/metadata';

/**
 * Puts into updates the metadata of the history's first entry, which alone stores it
 * (read-models/stored-update.ts); found in the first entry once per read.
 */
function wholeUpdates(first: Buffer): (update: Buffer) => Uint8Array {
  const metadata = metadataOfUpdate(first);
  return (update) => (metadata === undefined ? update : withMetadata(update, metadata));
}

/**
 * Histories read from Redis (read-models/evaluation-history.ts says what they hold), each read
 * with the first entry, for the metadata the later entries are stored without. An
 * update no client could decode is reported to `undecodable`: left out of a replay, and the
 * latest update refused as UNAVAILABLE rather than answered with an older one.
 */
export function createEvaluationHistory(
  redis: RedisClient,
  layout: KeyLayout,
  undecodable: UndecodableEntries,
): EvaluationHistory {
  const key = (evalId: string): string => layout.history(layout.partitionOf(evalId), evalId);
  return mappingOutages<EvaluationHistory>('reading an evaluation history', {
    async latest(evalId) {
      // Sent back to back (one round trip; not a MULTI, which Redis refuses when out of memory):
      // the length after the entry, so that an append in between can only make it longer, never
      // shorter than the entry's revision; the first entry last, which only a deletion (the
      // evaluation ended) changes: the history is then taken as gone.
      const [bytes, length, first] = await Promise.all([
        redis.lindexBuffer(key(evalId), -1),
        redis.llen(key(evalId)),
        redis.lindexBuffer(key(evalId), 0),
      ]);
      if (bytes === null || first === null) return undefined;
      const reason = updateInResponse(bytes);
      if (reason === undefined)
        return { update: fromBytes(EvaluationUpdate, wholeUpdates(first)(bytes)), length: BigInt(length) };
      const revision = BigInt(length);
      undecodable.report({ key: key(evalId), revision, reason });
      throw new UnavailableError(
        `evaluation ${evalId}'s latest update (revision ${revision}) cannot be decoded by a client (${reason}); it is left out, and the server log says where`,
      );
    },
    async after(evalId, revision) {
      // As above: the entries, then the first one, which is gone only when the history is.
      const [entries, first] = await Promise.all([
        redis.lrangeBuffer(key(evalId), revision.toString(), -1),
        redis.lindexBuffer(key(evalId), 0),
      ]);
      if (first === null) return undefined;
      const whole = wholeUpdates(first);
      return entries.flatMap((bytes, i): Encoded<EvaluationUpdate>[] => {
        const reason = updateInResponse(bytes);
        if (reason === undefined) return [fromBytes(EvaluationUpdate, whole(bytes))];
        // List index = revision - 1.
        undecodable.report({ key: key(evalId), revision: revision + BigInt(i) + 1n, reason });
        return [];
      });
    },
  });
}
