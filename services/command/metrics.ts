import { Counter, Histogram, type Registry } from 'prom-client';
import { createRpcMetrics, type RpcMetrics } from '../../shared/grpc';
import { counterOf, gaugeOf } from '../../shared/metrics';
import type { AdmissionLoad } from './application/admission';
import type { GuessCounts } from './application/recent-states';
import type { SweepResult } from './application/reaper';
import type { RetentionReport } from './application/retention';

/**
 * The command service's own metrics (docs/operations.md lists them all), beside the process',
 * PostgreSQL's, Redis' and S3's (shared/metrics). Hooks for what happens (a batch written, a
 * sweep); `watch` for what is read when Prometheus scrapes.
 */
export interface CommandMetrics {
  readonly rpc: RpcMetrics;
  /** Group commit wrote one batch of `size` commands. */
  readonly batchWritten: (size: number) => void;
  readonly reaperSwept: (result: SweepResult) => void;
  /** A retention run (not a dry one) ended. */
  readonly retentionRan: (report: RetentionReport) => void;
  watch(sources: {
    readonly load: () => AdmissionLoad;
    /** How the recent states served as commands' first guesses. */
    readonly guesses: () => GuessCounts;
    /** Blobs waiting in the fallback store (absent: no fallback store). */
    readonly fallbackBacklog?: () => Promise<number>;
  }): void;
}

export function createCommandMetrics(registry: Registry): CommandMetrics {
  const batches = new Histogram({
    name: 'crucible_group_commit_batch_commands',
    help: 'Commands per group-commit batch (one transaction, one round trip)',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [registry],
  });
  const reaped = new Counter({
    name: 'crucible_reaper_failed_total',
    help: 'Evaluations the reaper failed, by reason (executor_lost, timeout)',
    labelNames: ['reason'],
    registers: [registry],
  });
  const skipped = new Counter({
    name: 'crucible_reaper_sweeps_skipped_total',
    help: 'Reaper sweeps skipped because a dependency was down, by dependency',
    labelNames: ['dependency'],
    registers: [registry],
  });
  const retention = new Counter({
    name: 'crucible_retention_actions_total',
    help: 'What retention runs did, by action (archived, events_deleted, log_segments_moved, log_segments_deleted, security_records_purged)',
    labelNames: ['action'],
    registers: [registry],
  });
  const retentionRuns = new Counter({
    name: 'crucible_retention_runs_total',
    help: 'Retention runs that ended',
    registers: [registry],
  });
  return {
    rpc: createRpcMetrics(registry),
    retentionRan: (report) => {
      retentionRuns.inc();
      retention.inc({ action: 'archived' }, report.archived);
      retention.inc({ action: 'events_deleted' }, report.eventsDeleted);
      retention.inc({ action: 'log_segments_moved' }, report.logSegmentsMoved);
      retention.inc({ action: 'log_segments_deleted' }, report.logSegmentsDeleted);
      retention.inc({ action: 'security_records_purged' }, report.securityRecordsPurged);
    },
    batchWritten: (size) => batches.observe(size),
    reaperSwept: (result) => {
      for (const { reason } of result.failed) reaped.inc({ reason: reason.toLowerCase() });
      if (result.skipped !== undefined) skipped.inc({ dependency: result.skipped });
    },
    watch({ load, guesses, fallbackBacklog }) {
      gaugeOf(
        registry,
        { name: 'crucible_commands_in_progress', help: 'Commands admitted and not yet answered' },
        () => load().inProgress,
      );
      gaugeOf(
        registry,
        { name: 'crucible_commands_queued', help: 'Commands waiting for a place (MAX_QUEUED_COMMANDS bounds them)' },
        () => load().queued,
      );
      counterOf(
        registry,
        {
          name: 'crucible_commands_shed_total',
          help: 'Commands refused by admission, by why: queue_full, or deadline (could not start before the call deadline)',
          labelNames: ['reason'],
        },
        () => {
          const { shedQueueFull, shedDeadline } = load();
          return [
            { labels: { reason: 'queue_full' }, value: shedQueueFull },
            { labels: { reason: 'deadline' }, value: shedDeadline },
          ];
        },
      );
      counterOf(
        registry,
        {
          name: 'crucible_command_state_guesses_total',
          help: 'Commands on an existing evaluation by their first guess (COMMAND_STATE_CACHE_ENTRIES): hit (a recent state was kept, the command was decided against it without a load), miss (none kept: loaded first), reloaded (of the hits, those that needed a load after all: the write conflicted because another instance moved the evaluation or the request id was logged already, a retry; or the decision was a refusal or a repeat, which only a load confirms)',
          labelNames: ['result'],
        },
        () => {
          const { hits, misses, reloaded } = guesses();
          return [
            { labels: { result: 'hit' }, value: hits },
            { labels: { result: 'miss' }, value: misses },
            { labels: { result: 'reloaded' }, value: reloaded },
          ];
        },
      );
      if (fallbackBacklog !== undefined)
        gaugeOf(
          registry,
          {
            name: 'crucible_blob_fallback_backlog',
            help: 'Blobs written to BLOB_FALLBACK_DIR while S3 was down, not yet moved to S3',
          },
          fallbackBacklog,
        );
    },
  };
}
