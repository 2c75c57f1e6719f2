import type { Pool } from 'pg';
import {
  ARCHIVED_EVENT_COLUMNS,
  archivedEventOf,
  type ArchivedEvent,
  type ArchivedEventRow,
} from '../../../shared/archive';
import { ALL_TENANTS, evolve, isTerminal, type Status } from '../../../shared/domain';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { queryAs } from '../../../shared/postgres';
import { readOrUnavailable } from '../postgres/event-log';
import { pastHotRetention } from '../read-models/hot-retention';
import type { ArchiveReader } from './archive-reader';

/**
 * Where an archived evaluation's archive is (archived_evaluations). An archived evaluation
 * takes no more events (the command service's write requires `evaluations.archived_at` unset),
 * so its archive holds every event it has.
 */
export interface ArchiveLocation {
  readonly key: string;
  readonly sha256: string;
}

/** The archive a row joined to archived_evaluations names, if any. */
export function archiveLocationOf(row: {
  readonly archive_key?: string | null;
  readonly sha256?: string | null;
}): ArchiveLocation | undefined {
  return row.archive_key == null || row.sha256 == null ? undefined : { key: row.archive_key, sha256: row.sha256 };
}

/** An evaluation the read models do not have: none of the tenant's, one they should hold, or one that left them. */
export type RetiredRead = 'unknown' | 'held' | Evaluation;

/**
 * Evaluations that left the Redis read models: terminal ones past HOT_RETENTION (the query
 * service sweeps them out, redis/hot-retention-sweep.ts), and archived ones (the retention job).
 * They are read from PostgreSQL, and from the S3 archive once their events left the log, and
 * folded with the same `evolve` the projection uses: the same state the record held.
 */
export interface RetiredEvaluations {
  /**
   * For an evaluation whose record Redis does not have: 'unknown' when `tenant` has no such
   * evaluation (NOT_FOUND, whatever another tenant has), 'held' when the read models should
   * hold it (a missing record is then the read guard's business), else its state.
   */
  evaluation(tenant: string, evalId: string): Promise<RetiredRead>;
  /**
   * Every event of the evaluation, from its archive when it has one, else from the log (a
   * replay of one that ended: the caller found it visible to its tenant already).
   */
  eventsOf(evalId: string): Promise<ArchivedEvent[]>;
}

interface LocatedRow {
  status: Status;
  updated_at: Date;
  archive_key: string | null;
  sha256: string | null;
}

export function createRetiredEvaluations(deps: {
  readonly pool: Pool;
  readonly archives: ArchiveReader;
  /** HOT_RETENTION, ms; undefined while no evaluation leaves Redis for it (the sweep is off). */
  readonly hotMs: number | undefined;
  readonly clock?: () => number;
}): RetiredEvaluations {
  const { pool, archives, hotMs } = deps;
  const clock = deps.clock ?? Date.now;

  async function logEvents(evalId: string): Promise<ArchivedEvent[]> {
    // Every tenant: the caller found the evaluation as its tenant's already.
    const { rows } = await queryAs<ArchivedEventRow>(pool, ALL_TENANTS, {
      text: `SELECT ${ARCHIVED_EVENT_COLUMNS} FROM evaluation_events WHERE eval_id = $1 ORDER BY evaluation_events.position`,
      values: [evalId],
    });
    return rows.map((row) => archivedEventOf(evalId, row));
  }

  const eventsFrom = async (evalId: string, archive: ArchiveLocation | undefined): Promise<ArchivedEvent[]> =>
    archive === undefined ? logEvents(evalId) : [...(await archives.read(archive.key, archive.sha256)).events];

  return {
    eventsOf: (evalId) =>
      readOrUnavailable("reading an evaluation's events", async () => {
        const { rows } = await queryAs<Pick<LocatedRow, 'archive_key' | 'sha256'>>(pool, ALL_TENANTS, {
          text: `SELECT archive_key, sha256 FROM archived_evaluations WHERE eval_id = $1`,
          values: [evalId],
        });
        return eventsFrom(evalId, rows[0] === undefined ? undefined : archiveLocationOf(rows[0]));
      }),

    evaluation: (tenant, evalId) =>
      readOrUnavailable('reading an evaluation that left the read models', async () => {
        const { rows } = await queryAs<LocatedRow>(pool, tenant, {
          text: `SELECT e.status, e.updated_at, a.archive_key, a.sha256
                   FROM evaluations e LEFT JOIN archived_evaluations a ON a.eval_id = e.eval_id
                  WHERE e.eval_id = $1`,
          values: [evalId],
        });
        const row = rows[0];
        if (row === undefined) return 'unknown';
        const archive = archiveLocationOf(row);
        // Only an ended one can have left; `updated_at` is a cheap first look (the rule is the fold's).
        if (
          archive === undefined &&
          (hotMs === undefined || !isTerminal(row.status) || row.updated_at.getTime() >= clock() - hotMs)
        )
          return 'held';
        let state: Evaluation | undefined;
        for (const event of await eventsFrom(evalId, archive)) state = evolve(state, event);
        if (state === undefined) return 'held';
        return archive !== undefined || (hotMs !== undefined && pastHotRetention(state, clock(), hotMs))
          ? state
          : 'held';
      }),
  };
}
