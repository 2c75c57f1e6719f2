import type { EvaluationStatus, EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { Encoded } from '../wire/encoded';
import { tenantOfUpdate } from '../wire/metadata';

/**
 * One applied change as the live path carries it (tail → hub → streams): what routing,
 * filters and cursors need, beside the encoded update that every watcher is sent as it is.
 * The change log stores the same fields beside the update, so the live path decodes nothing
 * (but for ReadLogs' followers, who read a change of their evaluation's log sizes: decoded once).
 */
export interface Change {
  readonly position: bigint;
  readonly revision: bigint;
  readonly evalId: string;
  readonly status: EvaluationStatus;
  /** The evaluation's tenant ("" when the update does not parse): only its callers are sent it. */
  readonly tenant: string;
  readonly update: Encoded<EvaluationUpdate>;
}

/** The change an encoded update describes (history entries, and change-log entries written without the fields). */
export function changeOf(update: Encoded<EvaluationUpdate>): Change {
  const { message } = update;
  return {
    position: BigInt(message.position),
    revision: BigInt(message.revision),
    evalId: message.evaluation?.evalId ?? '',
    status: message.evaluation?.status ?? 0,
    tenant: tenantOfUpdate(update.bytes) ?? '',
    update,
  };
}
