import type { Pool } from 'pg';
import { UnavailableError } from '../../../shared/errors';
import { ALL_TENANTS } from '../../../shared/domain';
import { postgresUnavailableCause, preparedStatement, queryAs } from '../../../shared/postgres';
import type { RunningEvaluation, RunningEvaluations, RunningPage } from '../application/reaper';

// Oldest first along evaluations_status_created_idx (status, created_at DESC, eval_id DESC),
// scanned backwards; a page goes on after the last (created_at, eval_id) of the one before, a
// row comparison the index answers. ORDER BY names the table's columns: the text cursor column
// would sort as text. The cursor is the timestamp as PostgreSQL prints it, so it comes back
// exact (a JavaScript Date would drop its microseconds and repeat the row).
const COLUMNS = `eval_id, tenant_id, executor_id, started_at, timeout_seconds, revision::text AS revision,
                 created_at::text AS cursor_created_at`;
const FIRST_PAGE_SQL = `
  SELECT ${COLUMNS} FROM evaluations e
   WHERE e.status = 'running'
   ORDER BY e.created_at, e.eval_id LIMIT $1`;
const NEXT_PAGE_SQL = `
  SELECT ${COLUMNS} FROM evaluations e
   WHERE e.status = 'running' AND (e.created_at, e.eval_id) > ($2::timestamptz, $3::text)
   ORDER BY e.created_at, e.eval_id LIMIT $1`;

interface RunningRow {
  eval_id: string;
  tenant_id: string;
  executor_id: string | null;
  started_at: Date | null;
  timeout_seconds: number;
  revision: string;
  cursor_created_at: string;
}

/** Where a page ended, for the next one (opaque to the reaper). */
interface Cursor {
  readonly createdAt: string;
  readonly evalId: string;
}

/** The running evaluations, page by page (the reaper's candidates). */
export function createPostgresRunningEvaluations(pool: Pool): RunningEvaluations<Cursor> {
  return {
    async page(after, limit) {
      let rows: RunningRow[];
      try {
        const query =
          after === undefined
            ? preparedStatement(FIRST_PAGE_SQL, [limit])
            : preparedStatement(NEXT_PAGE_SQL, [limit, after.createdAt, after.evalId]);
        ({ rows } = await queryAs<RunningRow>(pool, ALL_TENANTS, query));
      } catch (err) {
        const cause = postgresUnavailableCause(err);
        if (cause === undefined) throw err;
        throw new UnavailableError(`PostgreSQL is unavailable (reading running evaluations): ${cause}`, { cause: err });
      }
      const evaluations = rows.map((row): RunningEvaluation => ({
        evalId: row.eval_id,
        tenant: row.tenant_id,
        executorId: row.executor_id ?? undefined,
        startedAt: row.started_at ?? undefined,
        timeoutSeconds: row.timeout_seconds,
        revision: row.revision,
      }));
      const last = rows[rows.length - 1];
      const page: RunningPage<Cursor> = {
        evaluations,
        ...(rows.length === limit && last !== undefined
          ? { next: { createdAt: last.cursor_created_at, evalId: last.eval_id } }
          : {}),
      };
      return page;
    },
  };
}
