import type { CallContext } from '../../../shared/grpc';
import type { GetEvaluationRequest } from '../../../shared/generated/crucible/storage/v1/query_service';
import type { GetEvaluationOut } from '../wire/encoded-messages';
import { RequestChecks } from '../domain/requests';
import type { ChangeHub } from '../live/change-hub';
import type { Readiness } from '../live/readiness';
import type { RetiredEvaluations } from '../archive/retired-evaluations';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import type { ReadGuard } from '../live/read-guard';
import type { OpenCalls } from '../live/open-calls';
import { readEvaluation } from '../live/evaluation-read';
import { waitForMinPosition } from '../live/min-position';
import type { Shutdown } from '../live/shutdown';

/**
 * GetEvaluation: one evaluation from its Redis record. With `min_position`, first waits
 * (within the deadline) until the read models have applied that position — an awaited event
 * from the change-log tail, not a poll. The record is read with its partition's checkpoint
 * (one MGET: they share a slot): a Redis that lost data since gets UNAVAILABLE, not a stale
 * answer or a NOT_FOUND (live/read-guard.ts).
 */
export function createGetEvaluation(deps: {
  readonly records: EvaluationRecords;
  readonly retired: RetiredEvaluations;
  readonly guard: ReadGuard;
  readonly openCalls: OpenCalls;
  readonly hub: ChangeHub;
  readonly readiness: Readiness;
  readonly shutdown: Shutdown;
}) {
  return async function getEvaluation(request: GetEvaluationRequest, context: CallContext): Promise<GetEvaluationOut> {
    const checks = new RequestChecks();
    const evalId = checks.evalId(request.evalId);
    const minPosition = checks.position(request.minPosition, 'min_position');
    checks.done();

    await deps.readiness.ready(context);
    if (minPosition !== undefined) await waitForMinPosition(deps, minPosition, context, 'GetEvaluation');
    return { evaluation: await readEvaluation(deps, evalId, context.caller.tenant, minPosition) };
  };
}
