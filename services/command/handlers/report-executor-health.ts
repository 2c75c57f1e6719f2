import type { ExecutorConfig } from '../../../shared/config';
import { validateExecutorHealth, type ExecutorHealthReport } from '../../../shared/executors';
import type { UnaryHandler } from '../../../shared/grpc';
import type {
  ReportExecutorHealthRequest,
  ReportExecutorHealthResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { Clock } from '../application/ports';
import { checkActsAsItself } from '../domain';

/** Where health reports are kept (services/command/redis/executor-health.ts). */
export interface HealthReports {
  /** Keeps the report of an executor of `tenant`. */
  record(report: ExecutorHealthReport, reportedAt: Date, tenant: string): Promise<void>;
}

export interface ReportExecutorHealthDeps {
  readonly healthReports: HealthReports;
  readonly clock: Clock;
  readonly executors: ExecutorConfig;
}

/**
 * Not a command: a report changes no evaluation and writes nothing to the event log. It is
 * kept in Redis for the health TTL, stamped with this service's clock (the one the reaper
 * judges by), and the answer tells the executor how long it counts.
 */
export function createReportExecutorHealth({
  healthReports,
  clock,
  executors,
}: ReportExecutorHealthDeps): UnaryHandler<ReportExecutorHealthRequest, ReportExecutorHealthResponse> {
  return async (request, { caller }) => {
    const report = validateExecutorHealth(request);
    // A report keeps an executor's evaluations from being reaped: only the executor itself may send it.
    checkActsAsItself(report.executorId, caller, 'reports its health');
    await healthReports.record(report, clock.now(), caller.tenant);
    return { ttlSeconds: executors.healthTtlSeconds };
  };
}
