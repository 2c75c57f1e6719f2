import { NotFoundError } from '../../../shared/errors';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import { recordVisibleTo } from '../read-models/tenancy';
import type { Encoded } from '../wire/encoded';
import type { ReadGuard } from './read-guard';

/**
 * One evaluation's record as GetEvaluation and WaitEvaluation read it: fresh (the read guard,
 * also against `minPosition` when given), NOT_FOUND only when the log agrees that there is no
 * such evaluation, and NOT_FOUND for another tenant's, as for an id nobody has.
 */
export async function readEvaluation(
  deps: { readonly records: EvaluationRecords; readonly guard: ReadGuard },
  evalId: string,
  tenant: string,
  minPosition?: bigint,
): Promise<Encoded<Evaluation>> {
  const fresh = deps.guard.beforeRead();
  const { record, checkpoint } = await deps.records.get(evalId);
  fresh(checkpoint, minPosition);
  if (record === undefined) {
    await deps.guard.confirmMissing(evalId, checkpoint);
    throw new NotFoundError(`evaluation ${evalId} not found`);
  }
  if (!recordVisibleTo(record, tenant)) throw new NotFoundError(`evaluation ${evalId} not found`);
  return record;
}
