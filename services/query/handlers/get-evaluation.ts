import { NotFoundError } from '../../../shared/errors';
import type { CallContext } from '../../../shared/grpc';
import type { GetEvaluationRequest } from '../../../shared/generated/crucible/storage/v1/query_service';
import type { GetEvaluationOut } from '../wire/encoded-messages';
import { RequestChecks } from '../domain/requests';
import type { ChangeHub } from '../live/change-hub';
import type { Readiness } from '../live/readiness';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import type { Shutdown } from '../live/shutdown';

/**
 * GetEvaluation: one evaluation from its Redis record. With `min_position`, first waits
 * (within the deadline) until the read models have applied that position — an awaited event
 * from the change-log tail, not a poll.
 */
export function createGetEvaluation(deps: {
  readonly records: EvaluationRecords;
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
    if (minPosition !== undefined) {
      await deps.hub.waitForPosition(minPosition, {
        signal: context.signal,
        deadline: context.deadline,
        shutdown: deps.shutdown,
      });
    }
    const evaluation = await deps.records.get(evalId);
    if (evaluation === undefined) throw new NotFoundError(`evaluation ${evalId} not found`);
    return { evaluation };
  };
}
