import type { Pool } from 'pg';
import type { ArchivedEvent } from '../../../shared/archive';
import { ALL_TENANTS, evolve, isTerminal, type EvaluationEvent, type Status } from '../../../shared/domain';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { queryAs } from '../../../shared/postgres';
import { readOrUnavailable } from '../postgres/event-log';
import { pastHotRetention } from '../read-models/hot-retention';
import type { ArchiveReader } from './archive-reader';

/** Where an archived evaluation's archive is, and which of its events it holds. */
export interface ArchiveLocation {
  readonly key: string;
  readonly sha256: string;
  /** Its last event when it was written: later ones (a write that raced it) are still in the log. */
  readonly lastPosition: bigint;
}

/**
 * Evaluations that left the Redis read models: terminal ones past HOT_RETENTION (the query
 * service sweeps them out, read-models/hot-retention.ts), and archived ones (the retention job).
 * They are read from PostgreSQL, and from the S3 archive once their events left the log, and
 * folded with the same `evolve` the projection uses: the same state the record held.
 */
export interface RetiredEvaluations {
  /**
   * The evaluation as its events fold, when it is `tenant`'s and has left the read models;
   * undefined when it is unknown to `tenant` or should still be in Redis (a missing record
   * there is then the read guard's business).
   */
  evaluation(tenant: string, evalId: string): Promise<Evaluation | undefined>;
  /** Every event of an archived evaluation, the archive's and any written after it, in position order. */
  archivedEvents(evalId: string, archive: ArchiveLocation): Promise<ArchivedEvent[]>;
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
  last_position: string | null;
}

interface EventRow {
  position: string;
  revision: string;
  event_type: EvaluationEvent['type'];
  data: EvaluationEvent['data'];
  recorded_at: Date;
  reporter: string | null;
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

  async function logEvents(evalId: string, after: bigint): Promise<ArchivedEvent[]> {
    // Every tenant: the caller found the evaluation as its tenant's already.
    const { rows } = await queryAs<EventRow>(pool, ALL_TENANTS, {
      text: `SELECT position::text AS position, revision::text AS revision, event_type, data, recorded_at, reporter
               FROM evaluation_events WHERE eval_id = $1 AND position > $2 ORDER BY evaluation_events.position`,
      values: [evalId, after.toString()],
    });
    return rows.map((row) => ({
      position: row.position,
      evalId,
      revision: row.revision,
      recordedAt: row.recorded_at.toISOString(),
      event: { type: row.event_type, data: row.data } as EvaluationEvent,
      reporter: row.reporter,
    }));
  }

  const retired: RetiredEvaluations = {
    async archivedEvents(evalId, archive) {
      const [archived, later] = await Promise.all([
        archives.read(archive.key, archive.sha256),
        readOrUnavailable("reading an archived evaluation's later events", () =>
          logEvents(evalId, archive.lastPosition),
        ),
      ]);
      // A newer version of the archive may hold some of the later ones already.
      const seen = new Set(archived.events.map((e) => e.position));
      return [...archived.events, ...later.filter((e) => !seen.has(e.position))];
    },

    eventsOf: (evalId) =>
      readOrUnavailable("reading an evaluation's events", async () => {
        const { rows } = await queryAs<Pick<LocatedRow, 'archive_key' | 'sha256' | 'last_position'>>(
          pool,
          ALL_TENANTS,
          {
            text: `SELECT archive_key, sha256, last_position::text AS last_position
                     FROM archived_evaluations WHERE eval_id = $1`,
            values: [evalId],
          },
        );
        const row = rows[0];
        if (row?.archive_key == null || row.sha256 === null || row.last_position === null) return logEvents(evalId, 0n);
        return retired.archivedEvents(evalId, {
          key: row.archive_key,
          sha256: row.sha256,
          lastPosition: BigInt(row.last_position),
        });
      }),

    evaluation: (tenant, evalId) =>
      readOrUnavailable('reading an evaluation that left the read models', async () => {
        const { rows } = await queryAs<LocatedRow>(pool, tenant, {
          text: `SELECT e.status, e.updated_at, a.archive_key, a.sha256, a.last_position::text AS last_position
                   FROM evaluations e LEFT JOIN archived_evaluations a ON a.eval_id = e.eval_id
                  WHERE e.eval_id = $1`,
          values: [evalId],
        });
        const row = rows[0];
        if (row === undefined) return undefined;
        const archived = row.archive_key !== null && row.sha256 !== null && row.last_position !== null;
        // Only an ended one can have left; `updated_at` is a cheap first look (the rule is the fold's).
        if (
          !archived &&
          (hotMs === undefined || !isTerminal(row.status) || row.updated_at.getTime() >= clock() - hotMs)
        )
          return undefined;
        const events = archived
          ? await retired.archivedEvents(evalId, {
              key: row.archive_key as string,
              sha256: row.sha256 as string,
              lastPosition: BigInt(row.last_position as string),
            })
          : await logEvents(evalId, 0n);
        let state: Evaluation | undefined;
        for (const event of events) state = evolve(state, event);
        if (state === undefined) return undefined;
        return archived || (hotMs !== undefined && pastHotRetention(state, clock(), hotMs)) ? state : undefined;
      }),
  };
  return retired;
}
