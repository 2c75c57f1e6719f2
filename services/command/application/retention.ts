import { archiveKey, encodeArchive } from '../../../shared/archive';
import type { BlobStore } from '../../../shared/blobs';
import type { Logger } from '../../../shared/logging';
import type { ExpiredLogSegment, RetentionStore } from '../postgres/retention-store';

/** How long each tier keeps what it holds (config: ACTIVE_RETENTION, LOG_HOT_RETENTION, …), in ms. */
export interface RetentionPolicy {
  /** A terminal evaluation untouched this long goes to the S3 archive and leaves the hot tables. */
  readonly activeMs: number;
  /** Log bytes kept in PostgreSQL move to S3 once this old. */
  readonly logHotMs: number;
  /** Logs are deleted once this old. */
  readonly logMs: number;
  /** Security records are purged once this old. */
  readonly securityMs: number;
}

/** What a run did (or, dry, would do): printed, logged and kept in `retention_runs`. */
export interface RetentionReport {
  readonly runId: string;
  readonly dryRun: boolean;
  /** The clock the run judged ages by. */
  readonly clock: string;
  /** Evaluations written to the archive and removed from the hot tables. */
  readonly archived: number;
  readonly archiveBytes: number;
  /** Evaluations left for the next run (changed while archived, or refused by S3). */
  readonly skipped: number;
  /** Events that left the log, and the horizon they left below. */
  readonly eventsDeleted: number;
  readonly horizon: string;
  readonly logSegmentsMoved: number;
  readonly logSegmentsDeleted: number;
  readonly securityRecordsPurged: number;
}

/** Rows handled per statement: each step is small, so a run killed at any point loses little work. */
const BATCH = 200;
const HORIZON_STEP = 10_000;

/**
 * One retention run over every tier, in an order that keeps each step safe to repeat:
 *
 * 1. Log bytes older than LOG_HOT_RETENTION move from PostgreSQL to S3 (upload, then the row
 *    points at it: a run killed between the two leaves an object the next run writes again).
 * 2. Logs older than LOG_RETENTION are deleted (rows first, the evaluation marked; the objects
 *    after: one left by a killed run is an orphan the sweeper deletes).
 * 3. Terminal evaluations untouched for ACTIVE_RETENTION are archived: the archive is uploaded
 *    under its fixed key, then one transaction marks the evaluation archived (it takes no event
 *    from then on), records the archive and removes what it holds from the hot tables, unless
 *    the evaluation gained an event meanwhile (the next run archives it with it). Killed between
 *    the two, the next run uploads the same archive again: nothing is archived twice, nothing is
 *    lost.
 * 4. The log's horizon moves over the archived events, which are deleted.
 * 5. Security records older than SECURITY_RETENTION are purged.
 *
 * A dry run reads and counts (the first batch of each step) and changes nothing; its horizon
 * step counts what the log allows now, without the archives the run would write.
 */
export async function runRetention(deps: {
  readonly store: RetentionStore;
  readonly blobs: BlobStore;
  readonly policy: RetentionPolicy;
  /** What ages are judged by. */
  readonly now: Date;
  /** When the run happens, as what it writes records it (archived_at, logs_expired_at); default `now`. */
  readonly recordedAt?: Date;
  readonly dryRun: boolean;
  readonly logger: Logger;
  /** Most evaluations archived per run (the rest wait for the next). */
  readonly limit?: number;
  /** Told after each evaluation archived (the CLI's progress). */
  readonly onArchived?: (evalId: string) => void;
}): Promise<RetentionReport> {
  const { store, blobs, policy, now, dryRun, logger } = deps;
  const recordedAt = deps.recordedAt ?? now;
  const limit = deps.limit ?? 10_000;
  const before = (ms: number): Date => new Date(now.getTime() - ms);
  const runId = dryRun ? 'dry-run' : await store.startRun(now, dryRun);
  let archived = 0;
  let archiveBytes = 0;
  let skipped = 0;
  let logSegmentsMoved = 0;
  let logSegmentsDeleted = 0;
  let securityRecordsPurged = 0;

  // 1. Log bytes to S3.
  for (let done = false; !done;) {
    const segments = await store.inlineLogSegments(before(policy.logHotMs), BATCH);
    done = segments.length < BATCH || dryRun;
    for (const segment of segments) {
      if (dryRun) {
        logSegmentsMoved += 1;
        continue;
      }
      const key = `evaluations/${segment.evalId}/logs/${segment.stream}-${segment.startOffset}`;
      await blobs.put(key, segment.content);
      if (await store.moveLogSegment(segment, key)) logSegmentsMoved += 1;
    }
  }

  // 2. Logs past LOG_RETENTION.
  for (let done = false; !done;) {
    const segments = await store.expiredLogSegments(before(policy.logMs), BATCH);
    done = segments.length < BATCH || dryRun;
    if (dryRun) {
      logSegmentsDeleted += segments.length;
      continue;
    }
    if (segments.length === 0) break;
    logSegmentsDeleted += await store.deleteLogSegments(segments, recordedAt);
    await deleteObjects(blobs, segments, logger);
  }

  // 3. The archive.
  async function archive(ref: { evalId: string; tenant: string }): Promise<void> {
    const content = await store.archiveOf(ref);
    if (content === undefined) return;
    const encoded = encodeArchive(content);
    if (dryRun) {
      archived += 1;
      archiveBytes += encoded.bytes.length;
      return;
    }
    const key = archiveKey(ref.tenant, ref.evalId);
    await blobs.put(key, encoded.bytes, encoded.sha256);
    const recorded = await store.recordArchive({
      ...ref,
      key,
      sha256: encoded.sha256,
      bytes: encoded.bytes.length,
      firstPosition: content.events[0]?.position ?? '0',
      lastPosition: content.events[content.events.length - 1]?.position ?? '0',
      events: content.events.length,
      archivedAt: recordedAt,
    });
    if (!recorded) {
      // A write reached it while its archive was made: the next run archives it with that.
      skipped += 1;
      return;
    }
    archived += 1;
    archiveBytes += encoded.bytes.length;
    deps.onArchived?.(ref.evalId);
  }
  while (archived + skipped < limit) {
    const aged = await store.agedEvaluations(before(policy.activeMs), Math.min(BATCH, limit - archived - skipped));
    for (const ref of aged) await archive(ref);
    if (aged.length < BATCH || dryRun) break;
  }

  // 4. The horizon.
  let eventsDeleted = 0;
  let horizon: string;
  for (;;) {
    const move = await store.advanceHorizon(HORIZON_STEP, dryRun);
    eventsDeleted += move.events;
    horizon = move.to;
    if (move.events < HORIZON_STEP || dryRun) break;
  }

  // 5. Security records.
  const securityLine = before(policy.securityMs);
  if (dryRun) securityRecordsPurged = await store.countSecurityRecords(securityLine);
  else
    for (;;) {
      const purged = await store.purgeSecurityRecords(securityLine, 5_000);
      securityRecordsPurged += purged;
      if (purged < 5_000) break;
    }

  const report: RetentionReport = {
    runId,
    dryRun,
    clock: now.toISOString(),
    archived,
    archiveBytes,
    skipped,
    eventsDeleted,
    horizon,
    logSegmentsMoved,
    logSegmentsDeleted,
    securityRecordsPurged,
  };
  if (!dryRun) await store.finishRun(runId, report);
  return report;
}

async function deleteObjects(blobs: BlobStore, segments: readonly ExpiredLogSegment[], logger: Logger): Promise<void> {
  for (const segment of segments) {
    if (segment.key === null || segment.home !== 's3') continue;
    try {
      await blobs.delete(segment.key);
    } catch (err) {
      // The row is gone: the object is an orphan now, which the sweeper deletes.
      logger.warn('an expired log object was not deleted; the orphan sweep will', { key: segment.key, err });
    }
  }
}
