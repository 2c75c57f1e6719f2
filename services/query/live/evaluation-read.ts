import { NotFoundError } from '../../../shared/errors';
import { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { RetiredEvaluations } from '../archive/retired-evaluations';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import { recordVisibleTo } from '../read-models/tenancy';
import { encodeOnce, type Encoded } from '../wire/encoded';
import type { ReadGuard } from './read-guard';

/**
 * One evaluation's record as GetEvaluation and WaitEvaluation read it: fresh (the read guard,
 * also against `minPosition` when given); for one that left the read models (HOT_RETENTION,
 * archived), what PostgreSQL or the archive folds to; NOT_FOUND only when the log agrees that
 * there is no such evaluation, and NOT_FOUND for another tenant's, as for an id nobody has.
 */
export async function readEvaluation(
  deps: { readonly records: EvaluationRecords; readonly guard: ReadGuard; readonly retired: RetiredEvaluations },
  evalId: string,
  tenant: string,
  minPosition?: bigint,
): Promise<Encoded<Evaluation>> {
  const fresh = deps.guard.beforeRead();
  const { record, checkpoint } = await deps.records.get(evalId);
  fresh(checkpoint, minPosition);
  if (record === undefined) {
    const retired = await readRetired(deps, evalId, tenant);
    if (retired === 'held') await deps.guard.confirmMissing(evalId, checkpoint);
    if (retired === 'unknown' || retired === 'held') throw new NotFoundError(`evaluation ${evalId} not found`);
    return retired;
  }
  if (!recordVisibleTo(record, tenant)) throw new NotFoundError(`evaluation ${evalId} not found`);
  return record;
}

/**
 * For an evaluation Redis has no record of: its record as the read models held it when it left
 * them; 'unknown' when `tenant` has no such evaluation; 'held' when the read models should have it.
 */
export async function readRetired(
  deps: { readonly retired: RetiredEvaluations },
  evalId: string,
  tenant: string,
): Promise<Encoded<Evaluation> | 'unknown' | 'held'> {
  const state = await deps.retired.evaluation(tenant, evalId);
  return typeof state === 'string' ? state : encodeOnce(Evaluation, state);
}
