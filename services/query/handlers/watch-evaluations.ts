import type { StreamConfig } from '../../../shared/config';
import type { CallContext, StreamSink } from '../../../shared/grpc';
import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { WatchEvaluationsRequest } from '../../../shared/generated/crucible/storage/v1/query_service';
import type { Change } from '../live/change';
import type { WatchOut } from '../wire/encoded-messages';
import { MAX_WATCHED_IDS, RequestChecks } from '../domain/requests';
import type { ChangeHub } from '../live/change-hub';
import type { Readiness } from '../live/readiness';
import type { OpenCalls } from '../live/open-calls';
import { createResumableStream } from '../live/resumable-stream';
import type { StreamBuffers } from '../live/stream-buffers';
import { outOfRange, type ChangeLog } from '../read-models/change-log';
import type { Shutdown } from '../live/shutdown';

/** Change-log entries read per replay step (bounded memory per stream). */
const REPLAY_PAGE = 256;

/**
 * WatchEvaluations: the firehose. With `after_position`, replays the change log after it
 * (OUT_OF_RANGE when that part was trimmed), then goes live; without it, live from now.
 * Filters by statuses and/or eval ids; progress messages carry the position reached even
 * when the filter dropped every change, so idle clients can checkpoint.
 */
export function createWatchEvaluations(deps: {
  readonly changeLog: ChangeLog;
  readonly hub: ChangeHub;
  readonly readiness: Readiness;
  readonly openCalls: OpenCalls;
  readonly streams: StreamConfig;
  readonly shutdown: Shutdown;
  /** Where the open streams' buffers are counted (metrics). */
  readonly streamBuffers?: StreamBuffers;
  /** Told when a slow client's buffer is dropped (tests). */
  readonly onFallback?: () => void;
}) {
  const { changeLog, hub } = deps;
  return async function watchEvaluations(
    request: WatchEvaluationsRequest,
    sink: StreamSink<WatchOut>,
    context: CallContext,
  ): Promise<void> {
    const checks = new RequestChecks();
    const afterPosition = checks.position(request.afterPosition, 'after_position');
    const statuses = request.statuses.map((s, i) => checks.status(s, `statuses[${i}]`));
    if (request.evalIds.length > MAX_WATCHED_IDS) {
      checks.fail(
        'eval_ids',
        'TOO_MANY',
        `eval_ids may list at most ${MAX_WATCHED_IDS} ids, not ${request.evalIds.length}`,
      );
    }
    request.evalIds.slice(0, MAX_WATCHED_IDS).forEach((id, i) => checks.evalId(id, `eval_ids[${i}]`));
    checks.done();

    const close = deps.openCalls.open(context.peer, 'a WatchEvaluations stream');
    try {
      await watch(afterPosition, statuses, request.evalIds, sink, context);
    } finally {
      close();
    }
  };

  async function watch(
    afterPosition: bigint | undefined,
    statuses: readonly EvaluationStatus[],
    evalIds: readonly string[],
    sink: StreamSink<WatchOut>,
    context: CallContext,
  ): Promise<void> {
    await deps.readiness.ready(context);
    if (afterPosition !== undefined) {
      const oldest = await changeLog.oldestResumable();
      if (afterPosition < oldest) throw outOfRange(oldest);
    }
    // UNSPECIFIED in the filter means "any status".
    const statusSet =
      statuses.length === 0 || statuses.includes(EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED)
        ? undefined
        : new Set(statuses);
    const idSet = evalIds.length === 0 ? undefined : new Set(evalIds);
    // Only the caller's tenant's changes, whatever the filter: the firehose of one tenant. A
    // change no client could decode goes out as a bare position (wire/encoded-messages.ts),
    // telling nobody anything, so that every cursor still moves past it.
    const { tenant } = context.caller;
    const matches = (c: Change): boolean =>
      (c.tenant === tenant || c.update.unreadable !== undefined) &&
      (statusSet === undefined || statusSet.has(c.status)) &&
      (idSet === undefined || idSet.has(c.evalId));

    // Read the applied position and register in the same tick: the next offer follows it.
    const offeredThrough = hub.appliedPosition;
    const stream = createResumableStream<Change>({
      start: afterPosition ?? offeredThrough,
      replayFirst: afterPosition !== undefined,
      offeredThrough,
      cursorOf: (c) => c.position,
      matches,
      isFinal: () => false,
      readAfter: async (position) => {
        const { entries, complete } = await changeLog.readAfter(position, REPLAY_PAGE);
        return { items: entries.map((e) => e.change), complete };
      },
      output: {
        update: (change) => sink.write({ update: change.update }),
        caughtUp: (p) => sink.write({ caughtUp: { position: p.toString() } }),
        progress: (p) => sink.write({ progress: { position: p.toString() } }),
      },
      bufferLimit: deps.streams.bufferLimit,
      progressIntervalMs: deps.streams.progressIntervalMs,
      describe: (position) => `position ${position}`,
      signal: context.signal,
      shutdown: deps.shutdown,
      onFallback: () => {
        deps.streamBuffers?.fellBack();
        deps.onFallback?.();
      },
    });
    const unsubscribe = hub.onAny((change) => stream.offer(change));
    const untrack = deps.streamBuffers?.track(stream);
    try {
      await stream.run();
    } finally {
      untrack?.();
      unsubscribe();
    }
  }
}
