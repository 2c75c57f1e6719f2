import type { CallContext } from '../../../shared/grpc';
import type {
  GetQueueMetricsRequest,
  GetQueueMetricsResponse,
  QueueCount,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import type { Readiness } from '../live/readiness';
import type { ReadGuard } from '../live/read-guard';
import { minCheckpoint } from '../read-models/checkpoints';
import type { QueueMetrics } from '../redis/queue-metrics';
import { compareCodeUnits } from '../../../shared/domain';

/**
 * GetQueueMetrics: the sizes of the queued and running indexes, overall and per language, engine
 * and executor (read-models/evaluation-list.ts), summed over the partitions: exact at the
 * position it names, never a scan. An index that differs from its count (members lost to a
 * hand or a partial restore) makes the call UNAVAILABLE while it is rewritten, as a list does.
 */
export function createGetQueueMetrics(deps: {
  readonly queue: QueueMetrics;
  readonly guard: ReadGuard;
  readonly readiness: Readiness;
  readonly clock?: () => Date;
}) {
  const now = deps.clock ?? (() => new Date());
  return async function getQueueMetrics(
    _request: GetQueueMetricsRequest,
    context: CallContext,
  ): Promise<GetQueueMetricsResponse> {
    await deps.readiness.ready(context);
    const fresh = deps.guard.beforeRead();
    const counts = await deps.queue.read(context.caller.tenant);
    for (const checkpoint of counts.checkpoints) fresh(checkpoint);
    deps.guard.reportDamagedIndexes(counts.damaged);
    const rows = (facet: keyof typeof counts.by): QueueCount[] =>
      [...counts.by[facet]]
        .sort(([a], [b]) => compareCodeUnits(a, b))
        .map(([key, { queued, running }]) => ({ key, queued: String(queued), running: String(running) }));
    const oldest = counts.oldestQueued;
    return {
      queued: String(counts.queued),
      running: String(counts.running),
      byLanguage: rows('language'),
      byEngine: rows('engine'),
      byExecutor: rows('executor'),
      ...(oldest !== undefined ? { oldestQueuedCreatedAt: oldest } : {}),
      oldestQueuedAgeSeconds: oldest === undefined ? 0 : Math.max(0, (now().getTime() - oldest.getTime()) / 1000),
      position: minCheckpoint(counts.checkpoints).toString(),
    };
  };
}
