import type { Pool, PoolClient } from 'pg';
import {
  ARCHIVED_EVENT_COLUMNS,
  archivedEventOf,
  type ArchivedBody,
  type ArchivedEventRow,
  type ArchivedMetric,
  type EvaluationArchive,
} from '../../../shared/archive';
import type { BlobHome, LogStream } from '../../../shared/domain';

/** An evaluation the retention job acts on. */
export interface EvaluationRef {
  readonly evalId: string;
  readonly tenant: string;
}

/** What `archived_evaluations` records of an archive written to S3. */
export interface ArchiveEntry extends EvaluationRef {
  readonly key: string;
  readonly sha256: string;
  readonly bytes: number;
  readonly firstPosition: string;
  readonly lastPosition: string;
  readonly events: number;
  readonly archivedAt: Date;
}

/** A log segment whose bytes are still kept in PostgreSQL. */
export interface InlineLogSegment extends EvaluationRef {
  readonly stream: LogStream;
  readonly startOffset: string;
  readonly content: Buffer;
}

/** A log segment past LOG_RETENTION. */
export interface ExpiredLogSegment extends EvaluationRef {
  readonly stream: LogStream;
  readonly startOffset: string;
  readonly key: string | null;
  readonly home: BlobHome;
}

export interface HorizonMove {
  readonly from: string;
  readonly to: string;
  /** Events deleted (or, in a dry run, that would be). */
  readonly events: number;
}

/**
 * The retention job's statements (application/retention.ts), run as the tables' owner: the
 * services' roles may delete nothing, and row-level security does not hold the owner (every
 * statement here is over every tenant on purpose).
 */
export interface RetentionStore {
  /** Terminal evaluations last changed before `before`, not archived, with no blob in the fallback directory. */
  agedEvaluations(before: Date, limit: number): Promise<EvaluationRef[]>;
  /** Everything of the evaluation the archive holds; undefined when it has no events (left the log). */
  archiveOf(ref: EvaluationRef): Promise<EvaluationArchive | undefined>;
  /**
   * In one transaction: marks the evaluation archived (from then on it takes no event: the
   * command service's UPDATE of its row requires it unmarked), records the archive and deletes
   * what it holds from the hot tables (inline bodies, metric points). False, with nothing done,
   * when the evaluation gained an event since `archiveOf` read it (its last event is not
   * `entry.lastPosition`).
   */
  recordArchive(entry: ArchiveEntry): Promise<boolean>;
  /**
   * Moves the horizon over the events whose evaluations are archived (every event up to it is
   * an archived one), at most `maxEvents` of them, and deletes those events; a dry run only
   * counts them.
   */
  advanceHorizon(maxEvents: number, dryRun: boolean): Promise<HorizonMove>;
  inlineLogSegments(before: Date, limit: number): Promise<InlineLogSegment[]>;
  /** The segment now lives in S3 under `key`; false when it had moved already. */
  moveLogSegment(segment: InlineLogSegment, key: string): Promise<boolean>;
  expiredLogSegments(before: Date, limit: number): Promise<ExpiredLogSegment[]>;
  /** Deletes the segments' rows and marks their evaluations' logs as expired. */
  deleteLogSegments(segments: readonly ExpiredLogSegment[], at: Date): Promise<number>;
  countSecurityRecords(before: Date): Promise<number>;
  /** Deletes at most `limit` security records recorded before `before`; how many went. */
  purgeSecurityRecords(before: Date, limit: number): Promise<number>;
  /**
   * Runs `work` holding the retention lock (a PostgreSQL advisory lock on a session of its own),
   * so that the instances of the command service and the CLI never run two at once; undefined,
   * without running it, when another holds the lock.
   */
  exclusively<T>(work: () => Promise<T>): Promise<T | undefined>;
  startRun(clock: Date, dryRun: boolean): Promise<string>;
  finishRun(runId: string, report: object): Promise<void>;
}

const TERMINAL = `('completed', 'failed', 'cancelled')`;

async function inTransaction<T>(pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

export function createPostgresRetentionStore(pool: Pool): RetentionStore {
  return {
    async agedEvaluations(before, limit) {
      const { rows } = await pool.query<{ eval_id: string; tenant_id: string }>(
        `SELECT e.eval_id, e.tenant_id FROM evaluations e
          WHERE e.status IN ${TERMINAL} AND e.archived_at IS NULL AND e.updated_at < $1
            AND NOT EXISTS (SELECT 1 FROM evaluation_bodies b WHERE b.eval_id = e.eval_id AND b.blob_store = 'file')
            AND NOT EXISTS (SELECT 1 FROM evaluation_log_segments s WHERE s.eval_id = e.eval_id AND s.blob_store = 'file')
          ORDER BY e.updated_at LIMIT $2`,
        [before, limit],
      );
      return rows.map((r) => ({ evalId: r.eval_id, tenant: r.tenant_id }));
    },

    async archiveOf({ evalId, tenant }) {
      // One snapshot for every table: what the archive holds is one moment of the evaluation.
      return inTransaction(pool, async (client) => {
        await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY');
        const row = await client.query<{ row: Record<string, unknown> }>(
          `SELECT to_jsonb(e) - 'tenant_id' AS row FROM evaluations e WHERE eval_id = $1`,
          [evalId],
        );
        const events = await client.query<ArchivedEventRow>(
          `SELECT ${ARCHIVED_EVENT_COLUMNS} FROM evaluation_events WHERE eval_id = $1 ORDER BY evaluation_events.position`,
          [evalId],
        );
        if (row.rows[0] === undefined || events.rows.length === 0) return undefined;
        const bodies = await client.query<{ kind: ArchivedBody['kind']; size: string; content: Buffer }>(
          `SELECT kind, size::text AS size, content FROM evaluation_bodies
            WHERE eval_id = $1 AND content IS NOT NULL ORDER BY kind`,
          [evalId],
        );
        const metrics = await client.query<{
          id: string;
          metric_name: string;
          metric_value: number;
          unit: string;
          step: string | null;
          measured_at: Date;
          recorded_at: Date;
          revision: string;
        }>(
          `SELECT id::text AS id, metric_name, metric_value, unit, step::text AS step, measured_at, recorded_at,
                  revision::text AS revision
             FROM evaluation_metrics m WHERE eval_id = $1
            ORDER BY m.metric_name, COALESCE(m.step, -1), m.measured_at, m.id`,
          [evalId],
        );
        return {
          evalId,
          tenant,
          row: row.rows[0].row,
          events: events.rows.map((e) => archivedEventOf(evalId, e)),
          bodies: bodies.rows.map((b) => ({ kind: b.kind, size: Number(b.size), content: b.content })),
          metrics: metrics.rows.map((m): ArchivedMetric => ({
            id: m.id,
            name: m.metric_name,
            value: m.metric_value,
            unit: m.unit,
            ...(m.step !== null ? { step: m.step } : {}),
            measuredAt: m.measured_at,
            recordedAt: m.recorded_at,
            revision: m.revision,
          })),
        };
      });
    },

    async recordArchive(entry) {
      try {
        return await inTransaction(pool, async (client) => {
          // The mark first: it locks the row, so a command in flight on it commits before this
          // goes on (and one after it finds the row marked). The next statement has a snapshot of
          // its own, taken after that wait: a command that committed since archiveOf shows there.
          await client.query(`UPDATE evaluations SET archived_at = $2 WHERE eval_id = $1`, [
            entry.evalId,
            entry.archivedAt,
          ]);
          const { rows } = await client.query<{ last: string | null }>(
            `SELECT max(position)::text AS last FROM evaluation_events WHERE eval_id = $1`,
            [entry.evalId],
          );
          if (rows[0]?.last !== entry.lastPosition) throw new ChangedSinceRead();
          await insertArchive(client, entry);
          await client.query(`DELETE FROM evaluation_bodies WHERE eval_id = $1 AND content IS NOT NULL`, [
            entry.evalId,
          ]);
          await client.query(`DELETE FROM evaluation_metrics WHERE eval_id = $1`, [entry.evalId]);
          return true;
        });
      } catch (err) {
        if (err instanceof ChangedSinceRead) return false;
        throw err;
      }
    },

    advanceHorizon(maxEvents, dryRun) {
      return inTransaction(pool, async (client) => {
        const { rows } = await client.query<{ horizon: string }>(
          `SELECT position::text AS horizon FROM event_log_horizon FOR UPDATE`,
        );
        const from = rows[0]?.horizon ?? '0';
        // The events after the horizon, in order, as long as each is covered by its evaluation's
        // archive: the first that is not (a live evaluation's) stops the horizon below it. Walks
        // the primary key from the horizon on, `limit` events at most.
        const walk = async (limit: number): Promise<string> => {
          const { rows: moved } = await client.query<{ to: string | null }>(
            `SELECT max(position)::text AS to FROM (
               SELECT e.position, bool_and(a.eval_id IS NOT NULL AND e.position <= a.last_position)
                        OVER (ORDER BY e.position ROWS UNBOUNDED PRECEDING) AS covered
                 FROM (SELECT position, eval_id FROM evaluation_events WHERE position > $1 ORDER BY position LIMIT $2) e
                 LEFT JOIN archived_evaluations a ON a.eval_id = e.eval_id
             ) walk WHERE covered`,
            [from, limit],
          );
          return moved[0]?.to ?? from;
        };
        // Nor may it split an archived evaluation: one whose first event is at or below it and
        // its last above (events interleave) keeps them all until the horizon passes its last, so
        // that read models starting at the horizon never meet an evaluation without its start.
        const straddling = async (at: string): Promise<{ first: string | null; last: string | null }> => {
          const { rows: split } = await client.query<{ first: string | null; last: string | null }>(
            `SELECT min(first_position)::text AS first, max(last_position)::text AS last FROM archived_evaluations
              WHERE first_position > $1 AND first_position <= $2 AND last_position > $2`,
            [from, at],
          );
          return split[0] ?? { first: null, last: null };
        };
        let limit = maxEvents;
        let walked = await walk(limit);
        // A walk cut short by its limit inside an archived evaluation longer than the limit would
        // stop the horizon below it on every run: it walks on to that evaluation's end instead.
        for (;;) {
          const cut = await straddling(walked);
          if (cut.last === null || BigInt(walked) - BigInt(from) < BigInt(limit)) break;
          limit = Number(BigInt(cut.last) - BigInt(from));
          walked = await walk(limit);
        }
        let to = walked;
        for (;;) {
          const { first } = await straddling(to);
          if (first === null) break;
          to = (BigInt(first) - 1n).toString();
        }
        // Every position above the horizon is in the log: the ones passed are to - from.
        const events = Number(BigInt(to) - BigInt(from));
        if (dryRun || events === 0) return { from, to, events };
        // The horizon first: the trigger lets only events at or below it go.
        await client.query(`UPDATE event_log_horizon SET position = $1`, [to]);
        const deleted = await client.query(`DELETE FROM evaluation_events WHERE position > $1 AND position <= $2`, [
          from,
          to,
        ]);
        return { from, to, events: deleted.rowCount ?? 0 };
      });
    },

    async inlineLogSegments(before, limit) {
      const { rows } = await pool.query<SegmentRow & { content: Buffer }>(
        `SELECT eval_id, tenant_id, stream, start_offset::text AS start_offset, content
           FROM evaluation_log_segments WHERE content IS NOT NULL AND recorded_at < $1
          ORDER BY recorded_at LIMIT $2`,
        [before, limit],
      );
      return rows.map((r) => ({ ...segmentOf(r), content: r.content }));
    },

    async moveLogSegment(segment, key) {
      const result = await pool.query(
        `UPDATE evaluation_log_segments SET content = NULL, s3_key = $4, blob_store = 's3'
          WHERE eval_id = $1 AND stream = $2 AND start_offset = $3 AND content IS NOT NULL`,
        [segment.evalId, segment.stream, segment.startOffset, key],
      );
      return (result.rowCount ?? 0) > 0;
    },

    async expiredLogSegments(before, limit) {
      const { rows } = await pool.query<SegmentRow & { s3_key: string | null; blob_store: BlobHome }>(
        `SELECT eval_id, tenant_id, stream, start_offset::text AS start_offset, s3_key, blob_store
           FROM evaluation_log_segments WHERE recorded_at < $1 ORDER BY recorded_at LIMIT $2`,
        [before, limit],
      );
      return rows.map((r) => ({ ...segmentOf(r), key: r.s3_key, home: r.blob_store }));
    },

    deleteLogSegments(segments, at) {
      return inTransaction(pool, async (client) => {
        const evalIds = [...new Set(segments.map((s) => s.evalId))];
        await client.query(
          `UPDATE evaluations SET logs_expired_at = $2 WHERE eval_id = ANY ($1) AND logs_expired_at IS NULL`,
          [evalIds, at],
        );
        const result = await client.query(
          `DELETE FROM evaluation_log_segments s USING unnest($1::text[], $2::text[], $3::bigint[]) AS gone (eval_id, stream, start_offset)
            WHERE s.eval_id = gone.eval_id AND s.stream = gone.stream AND s.start_offset = gone.start_offset`,
          [segments.map((s) => s.evalId), segments.map((s) => s.stream), segments.map((s) => s.startOffset)],
        );
        return result.rowCount ?? 0;
      });
    },

    async countSecurityRecords(before) {
      const { rows } = await pool.query<{ n: string }>(
        `SELECT ((SELECT count(*) FROM security_audit WHERE recorded_at < $1)
               + (SELECT count(*) FROM security_events WHERE recorded_at < $1))::text AS n`,
        [before],
      );
      return Number(rows[0]?.n ?? 0);
    },

    purgeSecurityRecords(before, limit) {
      return inTransaction(pool, async (client) => {
        // The purge line the tables' trigger lets through, for this transaction only.
        await client.query(`SELECT set_config('crucible.security_purge_before', $1, true)`, [before.toISOString()]);
        let purged = 0;
        for (const table of ['security_audit', 'security_events']) {
          const result = await client.query(
            `DELETE FROM ${table} WHERE position IN (
               SELECT position FROM ${table} WHERE recorded_at < $1 ORDER BY recorded_at LIMIT $2)`,
            [before, limit - purged],
          );
          purged += result.rowCount ?? 0;
          if (purged >= limit) break;
        }
        return purged;
      });
    },

    async exclusively(work) {
      const client = await pool.connect();
      // A session whose unlock failed goes, not back to the pool: its lock goes with it.
      let broken: Error | undefined;
      try {
        const { rows } = await client.query<{ held: boolean }>(
          `SELECT pg_try_advisory_lock(hashtext('crucible-retention')) AS held`,
        );
        if (rows[0]?.held !== true) return undefined;
        try {
          return await work();
        } finally {
          await client.query(`SELECT pg_advisory_unlock(hashtext('crucible-retention'))`).catch((err: Error) => {
            broken = err;
          });
        }
      } finally {
        client.release(broken);
      }
    },

    async startRun(clock, dryRun) {
      const { rows } = await pool.query<{ run_id: string }>(
        `INSERT INTO retention_runs (started_at, clock, dry_run) VALUES (now(), $1, $2) RETURNING run_id::text`,
        [clock, dryRun],
      );
      return rows[0]?.run_id ?? '';
    },

    async finishRun(runId, report) {
      await pool.query(`UPDATE retention_runs SET finished_at = now(), report = $2 WHERE run_id = $1`, [
        runId,
        JSON.stringify(report),
      ]);
    },
  };
}

/** Rolls the archive's transaction back: the evaluation gained an event since it was read. */
class ChangedSinceRead extends Error {
  override name = 'ChangedSinceRead';
}

async function insertArchive(client: PoolClient, entry: ArchiveEntry): Promise<void> {
  await client.query(
    `INSERT INTO archived_evaluations
       (eval_id, tenant_id, archive_key, archived_at, first_position, last_position, events, bytes, sha256)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [
      entry.evalId,
      entry.tenant,
      entry.key,
      entry.archivedAt,
      entry.firstPosition,
      entry.lastPosition,
      entry.events,
      entry.bytes,
      entry.sha256,
    ],
  );
}

/** What names a log segment, as the segment queries select it. */
interface SegmentRow {
  eval_id: string;
  tenant_id: string;
  stream: LogStream;
  start_offset: string;
}

function segmentOf(row: SegmentRow): EvaluationRef & { stream: LogStream; startOffset: string } {
  return { evalId: row.eval_id, tenant: row.tenant_id, stream: row.stream, startOffset: row.start_offset };
}
