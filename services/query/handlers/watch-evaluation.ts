import { NotFoundError } from '../../../shared/errors';
import type { StreamConfig } from '../../../shared/config';
import type { CallContext, StreamSink } from '../../../shared/grpc';
import type { WatchEvaluationRequest } from '../../../shared/generated/crucible/storage/v1/query_service';
import { changeOf, type Change } from '../live/change';
import type { WatchOut } from '../wire/encoded-messages';
import { isTerminalProto } from '../../../shared/domain';
import { RequestChecks } from '../domain/requests';
import type { ChangeHub } from '../live/change-hub';
import type { Readiness } from '../live/readiness';
import { createResumableStream } from '../live/resumable-stream';
import type { StreamBuffers } from '../live/stream-buffers';
import { lastUpdateOfEnded, type EvaluationHistory } from '../read-models/evaluation-history';
import { encodeUpdates } from '../projection/plan';
import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { fromBytes, type Encoded } from '../wire/encoded';
import type { Shutdown } from '../live/shutdown';
import { readRetired } from '../live/evaluation-read';
import type { RetiredEvaluations } from '../archive/retired-evaluations';
import type { EvaluationRecords } from '../read-models/evaluation-record';
import { recordVisibleTo, updateVisibleTo } from '../read-models/tenancy';
import type { ReadGuard } from '../live/read-guard';
import type { OpenCalls } from '../live/open-calls';

/**
 * WatchEvaluation: one evaluation's updates. Without `after_revision` the current state comes
 * first; with it, every stored revision above it. Then a caught-up marker, then live updates
 * (no gap, no duplicate at the seam: see live/resumable-stream.ts), progress messages every
 * `streams.progressIntervalMs`, and the end after a terminal state. NOT_FOUND when unknown.
 *
 * An ended evaluation keeps no history in Redis (read-models/evaluation-history.ts): its last
 * update is made from its record, and older revisions are folded from the event log.
 */
export function createWatchEvaluation(deps: {
  readonly history: EvaluationHistory;
  readonly records: EvaluationRecords;
  readonly retired: RetiredEvaluations;
  readonly guard: ReadGuard;
  readonly openCalls: OpenCalls;
  readonly hub: ChangeHub;
  readonly readiness: Readiness;
  readonly streams: StreamConfig;
  readonly shutdown: Shutdown;
  /** Where the open streams' buffers are counted (metrics). */
  readonly streamBuffers?: StreamBuffers;
}) {
  const { history, hub } = deps;
  return async function watchEvaluation(
    request: WatchEvaluationRequest,
    sink: StreamSink<WatchOut>,
    context: CallContext,
  ): Promise<void> {
    const checks = new RequestChecks();
    const evalId = checks.evalId(request.evalId);
    const afterRevision = checks.position(request.afterRevision, 'after_revision');
    checks.done();

    const close = deps.openCalls.open(context.peer, 'a WatchEvaluation stream');
    try {
      await follow(evalId, afterRevision, sink, context);
    } finally {
      close();
    }
  };

  async function follow(
    evalId: string,
    afterRevision: bigint | undefined,
    sink: StreamSink<WatchOut>,
    context: CallContext,
  ): Promise<void> {
    const latest = await latestOf(evalId, context);
    // Returned, not awaited: this frame ends here instead of staying suspended for the
    // stream's life.
    return watchFrom(evalId, afterRevision, latest, sink, context);
  }

  /**
   * The evaluation's latest change, as a stream keeps it while it is open: its figures and its
   * bytes, not the record and history entry it was read from, nor their decoded messages (an
   * idle stream holds only this much of the evaluation).
   */
  async function latestOf(evalId: string, context: CallContext): Promise<Change> {
    await deps.readiness.ready(context);
    // The record (with its checkpoint) first, then the history's last entry and length: a step
    // landing in between can only make the history newer than the record, never older.
    const fresh = deps.guard.beforeRead();
    const [{ record, checkpoint }, stored] = await Promise.all([deps.records.get(evalId), history.latest(evalId)]);
    fresh(checkpoint);
    // Another tenant's evaluation is not there, whatever Redis holds of it.
    const visible =
      record !== undefined
        ? recordVisibleTo(record, context.caller.tenant)
        : stored === undefined || updateVisibleTo(stored.update, context.caller.tenant);
    if (!visible) throw new NotFoundError(`evaluation ${evalId} not found`);
    let latest: Change;
    if (stored !== undefined) {
      latest = changeOf(stored.update);
      // A history shorter than its last revision, or older than the record, lost entries: its
      // replay would skip or misplace revisions.
      if (
        stored.length < latest.revision ||
        (record !== undefined && BigInt(record.message.revision) > latest.revision)
      )
        deps.guard.reportLost([evalId]);
    } else if (record === undefined) {
      // Left the read models (HOT_RETENTION, archived): it ended, and its last update is its end.
      const retired = await readRetired(deps, evalId, context.caller.tenant);
      if (retired === 'held') await deps.guard.confirmMissing(evalId, checkpoint);
      const ended = typeof retired === 'string' ? undefined : lastUpdateOfEnded(retired);
      if (ended === undefined) throw new NotFoundError(`evaluation ${evalId} not found`);
      latest = changeOf(ended);
    } else {
      // No history: the evaluation ended (maybe just after its record was read: read it again),
      // or the history was lost.
      const ended =
        lastUpdateOfEnded(record) ??
        (await deps.records.get(evalId).then(({ record: again }) => again && lastUpdateOfEnded(again)));
      if (ended === undefined) deps.guard.reportLost([evalId]);
      latest = changeOf(ended as NonNullable<typeof ended>);
    }
    if (latest.update.unreadable !== undefined) return latest;
    return { ...latest, update: fromBytes(EvaluationUpdate, latest.update.bytes) };
  }

  async function watchFrom(
    evalId: string,
    afterRevision: bigint | undefined,
    latest: Change,
    sink: StreamSink<WatchOut>,
    context: CallContext,
  ): Promise<void> {
    let lastPosition = 0n;
    const position = (): bigint => (hub.appliedPosition > lastPosition ? hub.appliedPosition : lastPosition);
    if (afterRevision !== undefined && afterRevision >= latest.revision && isTerminalProto(latest.status)) {
      // The client has seen the end already: nothing will ever follow.
      const at = latest.position > position() ? latest.position : position();
      await sink.write({ caughtUp: { position: at.toString() } });
      return;
    }

    const stream = createResumableStream<Change>({
      // Without after_revision, "replay from the revision before the latest" sends the current state first.
      start: afterRevision ?? latest.revision - 1n,
      replayFirst: true,
      offeredThrough: undefined,
      cursorOf: (c) => c.revision,
      matches: () => true,
      // Metrics may follow the end (late points): a replay goes on to the latest revision known
      // when the stream started; live, the first terminal state ends it.
      isFinal: (c) => isTerminalProto(c.status) && c.revision >= latest.revision,
      readAfter: async (revision) => ({
        items: (await replayAfter(evalId, revision, latest)).map(changeOf),
        complete: true,
      }),
      output: {
        update: async (change) => {
          if (change.position > lastPosition) lastPosition = change.position;
          await sink.write({ update: change.update });
        },
        caughtUp: (p) => sink.write({ caughtUp: { position: p.toString() } }),
        progress: (p) => sink.write({ progress: { position: p.toString() } }),
      },
      bufferLimit: deps.streams.bufferLimit,
      progressIntervalMs: deps.streams.progressIntervalMs,
      progressPosition: position,
      caughtUpPosition: position,
      describe: (revision) => `revision ${revision}`,
      signal: context.signal,
      shutdown: deps.shutdown,
      ...(deps.streamBuffers !== undefined ? { onFallback: () => deps.streamBuffers?.fellBack() } : {}),
    });
    const unsubscribe = hub.onEvaluation(evalId, (change) => stream.offer(change));
    const untrack = deps.streamBuffers?.track(stream);
    try {
      await stream.run();
    } finally {
      untrack?.();
      unsubscribe();
    }
  }

  /**
   * The updates above `revision`: from the history, or, once the evaluation ended and its
   * history is gone, its last update (`latest`, when that is all that is asked) or the log's.
   */
  async function replayAfter(evalId: string, revision: bigint, latest: Change): Promise<Encoded<EvaluationUpdate>[]> {
    const stored = await history.after(evalId, revision);
    if (stored !== undefined) return stored;
    if (isTerminalProto(latest.status) && revision === latest.revision - 1n) return [latest.update];
    // Its events: from the archive once retention took them out of the log.
    const events = await deps.retired.eventsOf(evalId);
    return encodeUpdates(events)
      .slice(Number(revision))
      .map((bytes) => fromBytes(EvaluationUpdate, bytes));
  }
}
