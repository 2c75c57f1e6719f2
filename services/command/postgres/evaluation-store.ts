import type { Pool } from 'pg';
import { UnavailableError } from '../../../shared/errors';
import { postgresUnavailableCause, queryAs } from '../../../shared/postgres';
import { createGroupCommit } from '../application/group-commit';
import type { AppendOutcome, AppendRequest, EvaluationStore } from '../application/ports';
import { writeBatch } from './batch-append';
import { loadBatch, type Loaded, type LoadRequest } from './batch-load';

export { appendStatement } from './append-statement';

/** Most commands (and loads) in one batch. */
const MAX_BATCH = 256;
/** Most bytes of bodies, log chunks and metric points in one transaction (a larger command goes alone). */
const MAX_BATCH_BYTES = 8 * 1024 * 1024;

export interface PostgresEvaluationStoreOptions {
  /** Told of each batch's size as it is written (tests). */
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
  const sessionTimeout = pool.options.statement_timeout;
  const sessionTimeoutMs = typeof sessionTimeout === 'number' && sessionTimeout > 0 ? sessionTimeout : Infinity;
  const target = { sessionTimeoutMs, connect: () => readOrUnavailable('append', () => pool.connect()) };
  const append = createGroupCommit<AppendRequest, AppendOutcome>((batch, settle) => writeBatch(target, batch, settle), {
    maxBatch: MAX_BATCH,
    maxBatchBytes: MAX_BATCH_BYTES,
    sizeOf: bytesOf,
    ...(options.onBatch !== undefined ? { onBatch: options.onBatch } : {}),
  });

  // Loads are batched the same way: the loads that arrive while one batch of them is in flight
  // go together, one statement per tenant, in one round trip (./batch-load.ts).
  const load = createGroupCommit<LoadRequest, Loaded>(
    (batch, settle) => readOrUnavailable('load', () => loadBatch(() => pool.connect(), batch, settle)),
    { maxBatch: MAX_BATCH, maxBatchBytes: Infinity, sizeOf: () => 1 },
  );

  return {
    append,
    load: (evalId, requestId, tenant) => load({ evalId, requestId, tenant }),
    archivedAt: (evalId, tenant) =>
      readOrUnavailable('archive lookup', async () => {
        const { rows } = await queryAs<{ archived_at: Date }>(pool, tenant, {
          text: `SELECT archived_at FROM archived_evaluations WHERE eval_id = $1`,
          values: [evalId],
        });
        return rows[0]?.archived_at;
      }),
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
