import type { Evaluation, EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { Encoded } from '../wire/encoded';
import { tenantOfEvaluation, tenantOfUpdate } from '../wire/metadata';

/**
 * Tenants on the read side: every record and update carries its evaluation's tenant
 * (`Evaluation.tenant_id`), read from the bytes without a decode. To a caller of any other
 * tenant the evaluation is not there: the handlers answer NOT_FOUND, as for an id nobody has,
 * so that ids cannot be probed; lists and counts read the caller's own indexes (keys.ts).
 */
export function recordVisibleTo(record: Encoded<Evaluation>, tenant: string): boolean {
  return tenantOfEvaluation(record.bytes) === tenant;
}

/** Whether an update (a change, a history entry) is of one of `tenant`'s evaluations. */
export function updateVisibleTo(update: Encoded<EvaluationUpdate>, tenant: string): boolean {
  return tenantOfUpdate(update.bytes) === tenant;
}
