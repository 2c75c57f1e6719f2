import { Counter, type Registry } from 'prom-client';
import { createRpcMetrics, type RpcMetrics } from '../../shared/grpc';
import { counterOf, gaugeOf } from '../../shared/metrics';
import type { ProjectorStatus } from './projection/projector';
import type { StreamBuffers } from './live/stream-buffers';

/**
 * The query service's own metrics (docs/operations.md lists them all), beside the process',
 * PostgreSQL's, Redis' and S3's (shared/metrics): the projection's lag and progress, the rebuild
 * under way, the open streams. Everything but the calls is read when Prometheus scrapes.
 */
export interface QueryMetrics {
  readonly rpc: RpcMetrics;
  /** A rebuild of the read models applied `applied` events, up to `position`. */
  readonly rebuildProgressed: (applied: number, position: bigint) => void;
  rebuildEnded(): void;
  /** A HOT_RETENTION sweep took `evicted` ended evaluations out of the read models. */
  readonly hotRetentionSwept: (evicted: number) => void;
  watch(sources: {
    readonly projection: () => ProjectorStatus;
    /** Streams and min_position waits held open (MAX_STREAMS counts them). */
    readonly openCalls: () => number;
    /** Watchers waiting on the replica's live changes. */
    readonly watchers: () => number;
    /** What the watch streams' live buffers hold. */
    readonly streamBuffers?: StreamBuffers;
  }): void;
}

export function createQueryMetrics(registry: Registry, clock: () => number = Date.now): QueryMetrics {
  let rebuild: { applied: number; position: bigint } | undefined;
  gaugeOf(
    registry,
    { name: 'crucible_rebuild_running', help: 'Whether this replica is rebuilding the read models (1) or not (0)' },
    () => (rebuild === undefined ? 0 : 1),
  );
  gaugeOf(
    registry,
    { name: 'crucible_rebuild_applied_events', help: 'Events the rebuild under way has applied so far' },
    () => rebuild?.applied ?? 0,
  );
  gaugeOf(registry, { name: 'crucible_rebuild_position', help: 'Log position the rebuild under way has reached' }, () =>
    Number(rebuild?.position ?? 0n),
  );
  const evicted = new Counter({
    name: 'crucible_hot_retention_evicted_total',
    help: 'Ended evaluations taken out of the Redis read models past HOT_RETENTION',
    registers: [registry],
  });
  const sweeps = new Counter({
    name: 'crucible_hot_retention_sweeps_total',
    help: 'HOT_RETENTION sweeps that ended',
    registers: [registry],
  });
  return {
    rpc: createRpcMetrics(registry),
    hotRetentionSwept: (n) => {
      sweeps.inc();
      evicted.inc(n);
    },
    rebuildProgressed: (applied, position) => {
      rebuild = { applied, position };
    },
    rebuildEnded() {
      rebuild = undefined;
    },
    watch({ projection, openCalls, watchers, streamBuffers }) {
      const gauges: [string, string, (s: ProjectorStatus) => number][] = [
        [
          'crucible_projection_checkpoint',
          'Lowest partition checkpoint: the log position the read models reached',
          (s) => Number(s.checkpoint),
        ],
        ['crucible_projection_head_position', 'Newest log position this replica knows of', (s) => Number(s.head)],
        [
          'crucible_projection_lag_positions',
          'Events committed and not yet in the read models',
          (s) => Number(s.head - s.checkpoint),
        ],
        [
          'crucible_projection_lag_seconds',
          'How long the read models have been behind the log (0 when caught up)',
          (s) => (s.behindSince === undefined ? 0 : Math.max(0, clock() - s.behindSince) / 1000),
        ],
        [
          'crucible_projection_caught_up',
          'Whether the replica has caught up and serves (1) or not (0)',
          (s) => (s.caughtUp ? 1 : 0),
        ],
        [
          'crucible_projection_stalled',
          'Whether the read models cannot move (1: Redis refuses writes, say) or can (0)',
          (s) => (s.stalled === undefined ? 0 : 1),
        ],
      ];
      for (const [name, help, value] of gauges) gaugeOf(registry, { name, help }, () => value(projection()));
      counterOf(
        registry,
        { name: 'crucible_projection_catch_up_events_total', help: 'Events applied by catch-up reads of the log' },
        () => Number(projection().catchUpEvents),
      );
      gaugeOf(
        registry,
        { name: 'crucible_open_calls', help: 'Streams and min_position waits held open (MAX_STREAMS bounds them)' },
        openCalls,
      );
      gaugeOf(registry, { name: 'crucible_watchers', help: 'Watchers waiting on the live changes' }, watchers);
      if (streamBuffers === undefined) return;
      gaugeOf(
        registry,
        {
          name: 'crucible_stream_buffered_changes',
          help: "Changes held in the watch streams' live buffers for their clients (STREAM_BUFFER_LIMIT each at most)",
        },
        () => streamBuffers.buffered(),
      );
      counterOf(
        registry,
        {
          name: 'crucible_stream_slow_client_fallbacks_total',
          help: 'Watch streams whose client fell behind their buffer: it was dropped and they re-read from Redis',
        },
        () => streamBuffers.fallbacks,
      );
    },
  };
}
