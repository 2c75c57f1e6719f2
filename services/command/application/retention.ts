import {
  archiveKey,
  decodeArchive,
  encodeArchive,
  type ArchivedMetric,
  type EvaluationArchive,
} from '../../../shared/archive';
import { BlobNotFoundError, type BlobStore } from '../../../shared/blobs';
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
  /** Archives written again: a write reached the evaluation while its archive was made. */
  readonly rearchived: number;
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
 *    under its fixed key, then one transaction records it and removes what it holds from the
 *    hot tables, unless the evaluation changed meanwhile. Killed between the two, the next run
 *    uploads the same archive again: nothing is archived twice, nothing is lost.
 * 4. Archives that a racing write outgrew are written again.
 * 5. The log's horizon moves over the archived events, which are deleted.
 * 6. Security records older than SECURITY_RETENTION are purged.
 *
 * A dry run reads and counts (up to `limit` per step) and changes nothing.
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
  let rearchived = 0;
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

  // 3 and 4. The archive.
  async function archive(ref: { evalId: string; tenant: string }, again: boolean): Promise<void> {
    const current = await store.archiveOf(ref);
    if (current === undefined) return;
    const key = archiveKey(ref.tenant, ref.evalId);
    let content = current;
    if (again) {
      // The first archive took the inline bodies and metric points out of PostgreSQL, and the
      // horizon may have taken its first events: PostgreSQL holds only part of the evaluation
      // now, the archive the rest. The new archive is the old one and what was written since.
      let previous: EvaluationArchive;
      try {
        previous = await readArchive(blobs, key);
      } catch (err) {
        if (!(err instanceof BlobNotFoundError)) throw err;
        // Written over, it would hold only what PostgreSQL still has: leave it for a person.
        logger.error('an archived evaluation gained events, but its archive is missing; not archived again', {
          evalId: ref.evalId,
          key,
        });
        skipped += 1;
        return;
      }
      content = mergeArchives(previous, current);
    }
    const encoded = encodeArchive(content);
    if (dryRun) {
      if (again) rearchived += 1;
      else archived += 1;
      archiveBytes += encoded.bytes.length;
      return;
    }
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
      skipped += 1;
      return;
    }
    if (again) rearchived += 1;
    else archived += 1;
    archiveBytes += encoded.bytes.length;
    deps.onArchived?.(ref.evalId);
  }
  for (const ref of await store.outgrownArchives(BATCH)) await archive(ref, true);
  while (archived + skipped < limit) {
    const aged = await store.agedEvaluations(before(policy.activeMs), Math.min(BATCH, limit - archived - skipped));
    for (const ref of aged) await archive(ref, false);
    if (aged.length < BATCH || dryRun) break;
  }

  // 5. The horizon.
  let eventsDeleted = 0;
  let horizon: string;
  for (;;) {
    const move = await store.advanceHorizon(HORIZON_STEP, dryRun);
    eventsDeleted += move.events;
    horizon = move.to;
    if (move.events < HORIZON_STEP || dryRun) break;
  }

  // 6. Security records.
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
    rearchived,
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

async function readArchive(blobs: BlobStore, key: string): Promise<EvaluationArchive> {
  const download = await blobs.open(key, new AbortController().signal);
  if (download === 'replaced') throw new Error(`archive ${key} was replaced while read`);
  const parts: Buffer[] = [];
  for await (const part of download.bytes) parts.push(Buffer.from(part.buffer, part.byteOffset, part.byteLength));
  return decodeArchive(Buffer.concat(parts));
}

/** The order archiveOf reads metric points in (a series after another, each in step and time order). */
function seriesOrder(a: ArchivedMetric, b: ArchivedMetric): number {
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  const step = BigInt(a.step ?? -1) - BigInt(b.step ?? -1);
  if (step !== 0n) return step < 0n ? -1 : 1;
  const time = a.measuredAt.getTime() - b.measuredAt.getTime();
  if (time !== 0) return time;
  const id = BigInt(a.id) - BigInt(b.id);
  return id === 0n ? 0 : id < 0n ? -1 : 1;
}

/**
 * An archive written again (its evaluation gained events after it): `current`, what PostgreSQL
 * holds now, completed by `previous`, the archive written before: its events below the first
 * one PostgreSQL still has (the horizon took them), its bodies and metric points (the first
 * archive took them out of PostgreSQL). What both hold, PostgreSQL's copy of it.
 */
function mergeArchives(previous: EvaluationArchive, current: EvaluationArchive): EvaluationArchive {
  const first = BigInt(current.events[0]?.position ?? '0');
  const kinds = new Set(current.bodies.map((b) => b.kind));
  const ids = new Set(current.metrics.map((m) => m.id));
  return {
    ...current,
    events: [...previous.events.filter((e) => BigInt(e.position) < first), ...current.events],
    bodies: [...previous.bodies.filter((b) => !kinds.has(b.kind)), ...current.bodies].sort((a, b) =>
      a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : 0,
    ),
    metrics: [...previous.metrics.filter((m) => !ids.has(m.id)), ...current.metrics].sort(seriesOrder),
  };
}
