import type { CallContext } from '../../../shared/grpc';
import { executorStateToProto } from '../../../shared/executors';
import type {
  ListExecutorsRequest,
  ListExecutorsResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import type { LiveExecutors } from '../redis/executors';

/**
 * ListExecutors: the executors whose last health report (ReportExecutorHealth, kept in Redis
 * only, with a TTL) has not expired, each with that report and its age by this service's clock.
 * Not a read model of the log: no readiness or checkpoint applies.
 */
export function createListExecutors(deps: { readonly executors: LiveExecutors; readonly clock?: () => Date }) {
  const now = deps.clock ?? (() => new Date());
  return async function listExecutors(
    _request: ListExecutorsRequest,
    context: CallContext,
  ): Promise<ListExecutorsResponse> {
    const at = now().getTime();
    const reports = await deps.executors.list();
    return {
      // The caller's tenant's executors only.
      executors: reports
        .filter((report) => report.tenant === context.caller.tenant)
        .map((report) => ({
          executorId: report.executorId,
          status: executorStateToProto(report.status),
          capacity: report.capacity,
          running: report.running,
          version: report.version,
          metrics: { ...report.metrics },
          reportedAt: report.reportedAt,
          ageSeconds: Math.max(0, (at - report.reportedAt.getTime()) / 1000),
        })),
    };
  };
}
