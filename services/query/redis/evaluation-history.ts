import type { Redis } from 'ioredis';
import { UnavailableError } from '../../../shared/errors';
import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationHistory } from '../read-models/evaluation-history';
import type { KeyLayout } from '../read-models/keys';
import { fromBytes, type Encoded } from '../wire/encoded';
import { updateInResponse } from '../wire/readability';
import { mappingOutages } from './errors';
import type { UndecodableEntries } from './undecodable-entries';
import { metadataOfUpdate, withMetadata } from '../wire/metadata';

/** The replies of a MULTI, each checked: a failed command fails the read. */
function replies(results: [Error | null, unknown][] | null): unknown[] {
  if (results === null) throw new Error('the history read was aborted');
  return results.map(([err, value]) => {
    if (err !== null) throw err;
    return value;
  });
}

/** `update` with the metadata of the history's first entry, which alone stores it (read-models/stored-update.ts). */
function whole(update: Buffer, first: Buffer | null): Uint8Array {
  const metadata = first === null ? undefined : metadataOfUpdate(first);
  return metadata === undefined ? update : withMetadata(update, metadata);
}

/**
 * Histories read from Redis (read-models/evaluation-history.ts says what they hold), each read
 * with the first entry in one MULTI, for the metadata the later entries are stored without. An
 * update no client could decode is reported to `undecodable`: left out of a replay, and the
 * latest update refused as UNAVAILABLE rather than answered with an older one.
 */
export function createEvaluationHistory(
  redis: Redis,
  layout: KeyLayout,
  undecodable: UndecodableEntries,
): EvaluationHistory {
  const key = (evalId: string): string => layout.history(layout.partitionOf(evalId), evalId);
  return mappingOutages<EvaluationHistory>('reading an evaluation history', {
    async latest(evalId) {
      const [bytes, length, first] = replies(
        await redis.multi().lindexBuffer(key(evalId), -1).llen(key(evalId)).lindexBuffer(key(evalId), 0).exec(),
      ) as [Buffer | null, number, Buffer | null];
      if (bytes === null) return undefined;
      const reason = updateInResponse(bytes);
      if (reason === undefined)
        return { update: fromBytes(EvaluationUpdate, whole(bytes, first)), length: BigInt(length) };
      const revision = BigInt(length);
      undecodable.report({ key: key(evalId), revision, reason });
      throw new UnavailableError(
        `evaluation ${evalId}'s latest update (revision ${revision}) cannot be decoded by a client (${reason}); it is left out, and the server log says where`,
      );
    },
    async after(evalId, revision) {
      const [entries, first] = replies(
        await redis.multi().lrangeBuffer(key(evalId), revision.toString(), -1).lindexBuffer(key(evalId), 0).exec(),
      ) as [Buffer[], Buffer | null];
      if (first === null) return undefined;
      return entries.flatMap((bytes, i): Encoded<EvaluationUpdate>[] => {
        const reason = updateInResponse(bytes);
        if (reason === undefined) return [fromBytes(EvaluationUpdate, whole(bytes, first))];
        // List index = revision - 1.
        undecodable.report({ key: key(evalId), revision: revision + BigInt(i) + 1n, reason });
        return [];
      });
    },
  });
}
