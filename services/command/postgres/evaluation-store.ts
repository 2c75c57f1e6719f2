import type { Pool } from 'pg';
import type { Status } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import { postgresUnavailableCause, preparedStatement, queryAs } from '../../../shared/postgres';
import { createGroupCommit } from '../application/group-commit';
import type { AppendOutcome, AppendRequest, EvaluationStore } from '../application/ports';
import type { EvaluationSnapshot, LoggedCommand } from '../domain';
import { writeBatch } from './batch-append';

export { appendStatement } from './append-statement';

// One round trip: the evaluation with its first and latest command, and the earlier command
// with this request id (which may belong to another evaluation). $1 eval_id, $2 request_id.
// Exported for the bench's command floor, which must run the very statements it is a floor of.
export const LOAD_SQL = `
  SELECT 'state' AS source, e.eval_id, e.status, e.revision::text AS revision,
         cur.position::text AS position, cur.command_hash,
         sub.position::text AS submitted_position, sub.command_hash AS submitted_hash,
         e.created_at, e.completed_at, e.metric_names,
         e.stdout_bytes::text AS stdout_bytes, e.stderr_bytes::text AS stderr_bytes, e.executor_id
    FROM evaluations e
    JOIN evaluation_events cur ON cur.eval_id = e.eval_id AND cur.revision = e.revision
    JOIN evaluation_events sub ON sub.eval_id = e.eval_id AND sub.revision = 1
   WHERE e.eval_id = $1
  UNION ALL
  SELECT 'request', r.eval_id, NULL, r.revision::text, r.position::text, r.command_hash, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL
    FROM evaluation_events r
   WHERE $2::text IS NOT NULL AND r.request_id = $2`;

interface LoadRow {
  source: 'state' | 'request';
  eval_id: string;
  status: Status | null;
  revision: string;
  position: string;
  command_hash: string;
  submitted_position: string | null;
  submitted_hash: string | null;
  created_at: Date | null;
  completed_at: Date | null;
  metric_names: string[] | null;
  stdout_bytes: string | null;
  stderr_bytes: string | null;
  executor_id: string | null;
}

/** How commands are grouped into batches (see createGroupCommit). */
export interface GroupCommitLimits {
  /** Most commands in one transaction. */
  readonly maxBatch: number;
  /** Most bytes of bodies, log chunks and metric points in one transaction (a larger command goes alone). */
  readonly maxBatchBytes: number;
}

export const DEFAULT_GROUP_COMMIT: GroupCommitLimits = { maxBatch: 256, maxBatchBytes: 8 * 1024 * 1024 };

export interface PostgresEvaluationStoreOptions {
  /** The pool batches are written through (one session at a time); `pool` unless given. */
  readonly writes?: Pool;
  readonly groupCommit?: GroupCommitLimits;
  /** Told of each batch's size as it is written. */
  readonly onBatch?: (size: number) => void;
}

/**
 * The write model in PostgreSQL. A command is one statement: the state change, the body (if
 * kept in PostgreSQL), the next position from `event_log_head` and the event are data-modifying
 * CTEs chained so that each runs only if the previous one matched (./append-statement.ts).
 *
 * Commands are written by group commit (../application/group-commit.ts): the commands that
 * arrive while a transaction is in flight are written together in the next one, each its own
 * statement with its own outcome, in one round trip (./batch-append.ts). The lock that orders
 * the log (`event_log_head`) is taken once per batch instead of once per command, and held for
 * the batch's statements and commit only, never across a round trip (docs/event-log.md).
 *
 * Each statement runs in its command's tenant (shared/postgres/tenancy.ts). A batch whose
 * members' calls have deadlines nearer than the sessions' statement_timeout is bounded to the
 * nearest: PostgreSQL cancels it then, so a call the client gave up on does not commit later,
 * unseen.
 *
 * A failed write says what is known of it: UnavailableError when PostgreSQL answered with an
 * error (the transaction rolled back: nothing was written) or the write was never sent;
 * CommitOutcomeUnknownError when the connection failed after it was sent.
 */
export function createPostgresEvaluationStore(
  pool: Pool,
  options: PostgresEvaluationStoreOptions = {},
): EvaluationStore {
  // The sessions' own statement_timeout (shared/postgres/pool.ts): a deadline further away
  // than this needs no bound of its own.
  const writes = options.writes ?? pool;
  const sessionTimeout = writes.options.statement_timeout;
  const sessionTimeoutMs = typeof sessionTimeout === 'number' && sessionTimeout > 0 ? sessionTimeout : Infinity;
  const limits = options.groupCommit ?? DEFAULT_GROUP_COMMIT;
  const target = { sessionTimeoutMs, connect: () => readOrUnavailable('append', () => writes.connect()) };
  const append = createGroupCommit<AppendRequest, AppendOutcome>((batch, settle) => writeBatch(target, batch, settle), {
    maxBatch: limits.maxBatch,
    maxBatchBytes: limits.maxBatchBytes,
    sizeOf: bytesOf,
    ...(options.onBatch !== undefined ? { onBatch: options.onBatch } : {}),
  });

  return {
    append,
    load(evalId, requestId, tenant) {
      return readOrUnavailable('load', async () => {
        const { rows } = await queryAs<LoadRow>(
          pool,
          tenant,
          preparedStatement(LOAD_SQL, [evalId ?? '', requestId ?? null]),
        );
        let snapshot: EvaluationSnapshot | undefined;
        let priorRequest: LoggedCommand | undefined;
        for (const row of rows) {
          const latest = {
            evalId: row.eval_id,
            revision: row.revision,
            position: row.position,
            commandHash: row.command_hash,
          };
          if (row.source === 'request') {
            priorRequest = latest;
          } else if (
            row.status !== null &&
            row.submitted_position !== null &&
            row.submitted_hash !== null &&
            row.created_at !== null
          ) {
            snapshot = {
              evalId: row.eval_id,
              status: row.status,
              revision: row.revision,
              createdAt: row.created_at,
              ...(row.completed_at !== null ? { endedAt: row.completed_at } : {}),
              metricNames: row.metric_names ?? [],
              logBytes: { stdout: Number(row.stdout_bytes ?? 0), stderr: Number(row.stderr_bytes ?? 0) },
              ...(row.executor_id !== null ? { executorId: row.executor_id } : {}),
              latest,
              submitted: {
                evalId: row.eval_id,
                revision: '1',
                position: row.submitted_position,
                commandHash: row.submitted_hash,
              },
            };
          }
        }
        return {
          ...(snapshot !== undefined ? { snapshot } : {}),
          ...(priorRequest !== undefined ? { priorRequest } : {}),
        };
      });
    },
  };
}

/** What a command adds to its batch's transaction, roughly: its bytes, its points, its row. */
function bytesOf(request: AppendRequest): number {
  const body = request.body?.content?.length ?? 0;
  const points = request.decision.metrics?.points.length ?? 0;
  return 512 + body + points * 64;
}

/**
 * Runs a read (or the checkout of a session, before anything is sent): a PostgreSQL that
 * cannot do it becomes UnavailableError; nothing was written.
 */
export async function readOrUnavailable<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const cause = postgresUnavailableCause(err);
    if (cause === undefined) throw err;
    // pg-pool reports "no free connection in time" like a refused connection: under
    // overload the caller should hear that, not that the database is down.
    const overloaded = err instanceof Error && err.message.includes('timeout exceeded when trying to connect');
    throw new UnavailableError(
      overloaded
        ? `command service overloaded: no PostgreSQL connection free in time (${what}); retry with backoff`
        : `PostgreSQL is unavailable (${what}): ${cause}; retry`,
      { cause: err },
    );
  }
}
