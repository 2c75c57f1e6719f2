import type { Pool } from 'pg';
import type { EvaluationEvent, RecordedEvent } from '../../../shared/domain';
import { CommitOutcomeUnknownError, DeadlineError, UnavailableError } from '../../../shared/errors';
import {
  leavesOutcomeUnknown,
  postgresUnavailableCause,
  holdingSession,
  preparedStatement,
  queryAs,
  queryInTransaction,
  uniqueViolation,
} from '../../../shared/postgres';
import type { AppendOutcome, AppendRequest, EvaluationStore } from '../application/ports';
import type { Decision, EvaluationSnapshot, LoggedCommand } from '../domain';

type AppendDecision = Extract<Decision, { kind: 'append' }>;
import type { Status } from '../../../shared/domain';

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

/** Column values of `evaluations` that an event sets. */
function columnsOf(decision: AppendDecision): Record<string, unknown> {
  const { event, status } = decision;
  switch (event.type) {
    case 'EvaluationQueued':
      return { status };
    case 'EvaluationStarted':
      return {
        status,
        executor_id: event.data.executorId,
        container_id: event.data.containerId,
        started_at: event.data.startedAt,
      };
    case 'EvaluationCompleted':
      return {
        status,
        exit_code: event.data.exitCode,
        completed_at: event.data.completedAt,
        output_preview: Buffer.from(event.data.output.previewBase64, 'base64'),
        output_size: event.data.output.size,
        output_location: event.data.output.location,
      };
    case 'EvaluationFailed':
      return {
        status,
        exit_code: event.data.exitCode,
        failure_reason: event.data.reason,
        completed_at: event.data.completedAt,
        error_preview: Buffer.from(event.data.error.previewBase64, 'base64').toString('utf8'),
        error_size: event.data.error.size,
        error_location: event.data.error.location,
      };
    case 'EvaluationCancelled':
      return { status, cancel_reason: event.data.reason, completed_at: event.data.cancelledAt };
    case 'EvaluationMetricsRecorded':
      return { metric_names: decision.metrics?.names ?? [] };
    case 'EvaluationContainerCreated':
    case 'EvaluationSecurityViolation':
      return {};
    case 'EvaluationLogsAppended':
      return { [`${event.data.stream}_bytes`]: event.data.offset + event.data.length };
    case 'EvaluationBlobMoved':
      if (event.data.kind === 'output') return { output_location: event.data.to };
      if (event.data.kind === 'error') return { error_location: event.data.to };
      return {};
    default: {
      const unreachable: never = event;
      throw new Error(`unknown event ${JSON.stringify(unreachable)}`);
    }
  }
}

/** Builds numbered SQL parameters. */
class Params {
  readonly values: unknown[] = [];

  add(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
}

/**
 * The row a security event keeps in its append-only table (`security_audit` for a container
 * created, `security_events` for a violation), at the event's position and revision: one row,
 * so it may follow the head's update.
 */
function securityRow(
  event: EvaluationEvent,
  p: Params,
  evalId: string,
  toRevision: string,
  recordedAt: string,
): string | undefined {
  if (event.type === 'EvaluationContainerCreated') {
    const d = event.data;
    return `audit AS (
      INSERT INTO security_audit (eval_id, container_id, event_type, image, limits, occurred_at, recorded_at,
                                  revision, position)
      SELECT ${evalId}, ${p.add(d.containerId)}, 'container_created', ${p.add(d.image)}, ${p.add(JSON.stringify(d.limits))},
             ${p.add(d.occurredAt)}, ${recordedAt}, ${toRevision}, head.position
        FROM head)`;
  }
  if (event.type === 'EvaluationSecurityViolation') {
    const d = event.data;
    return `violation AS (
      INSERT INTO security_events (eval_id, container_id, violation_type, severity, action_taken, details,
                                   occurred_at, recorded_at, revision, position)
      SELECT ${evalId}, ${p.add(d.containerId)}, ${p.add(d.violationType)}, ${p.add(d.severity)}, ${p.add(d.actionTaken)},
             ${p.add(JSON.stringify(d.details))}, ${p.add(d.occurredAt)}, ${recordedAt}, ${toRevision}, head.position
        FROM head)`;
  }
  return undefined;
}

/**
 * The blob row a move changes: the body, or the log segment, whose key is in the fallback store
 * still. No row matched (moved already, or another key), no event: the write reports a conflict.
 */
function movedRow(data: Extract<EvaluationEvent, { type: 'EvaluationBlobMoved' }>['data'], p: Params): string {
  const target =
    data.kind === 'stdout' || data.kind === 'stderr'
      ? `evaluation_log_segments t SET blob_store = ${p.add(data.to)} FROM changed
          WHERE t.eval_id = changed.eval_id AND t.stream = ${p.add(data.kind)} AND t.start_offset = ${p.add(data.offset ?? 0)}`
      : `evaluation_bodies t SET blob_store = ${p.add(data.to)} FROM changed
          WHERE t.eval_id = changed.eval_id AND t.kind = ${p.add(data.kind)}`;
  return `moved AS (
    UPDATE ${target} AND t.s3_key = ${p.add(data.key)} AND t.blob_store <> ${p.add(data.to)}
    RETURNING 1)`;
}

/**
 * The one statement that appends a command (see createPostgresEvaluationStore), with its
 * parameters: state change, body, next position, event. It returns the new position, or no
 * row when the state row did not match (a conflict). Exported for the bench's command floor.
 */
export function appendStatement(request: AppendRequest): { text: string; values: unknown[] } {
  const { decision } = request;
  const { event } = decision;
  const p = new Params();
  const evalId = p.add(decision.evalId);
  const toRevision = p.add(decision.toRevision);
  const recordedAt = p.add(request.recordedAt.toISOString());
  const ctes: string[] = [];

  if (event.type === 'EvaluationQueued') {
    const d = event.data;
    ctes.push(`changed AS (
      INSERT INTO evaluations (eval_id, status, code_hash, code_size, language, engine,
                               timeout_seconds, metadata, created_at, updated_at, revision)
      VALUES (${evalId}, 'queued', ${p.add(d.codeHash)}, ${p.add(d.codeSize)},
              ${p.add(d.language)}, ${p.add(d.engine)}, ${p.add(d.timeoutSeconds)}, ${p.add(JSON.stringify(d.metadata))},
              ${p.add(d.createdAt)}, ${recordedAt}, ${toRevision})
      ON CONFLICT (eval_id) DO NOTHING
      RETURNING eval_id)`);
  } else {
    const assignments = Object.entries(columnsOf(decision)).map(([column, value]) => `${column} = ${p.add(value)}`);
    assignments.push(`updated_at = ${recordedAt}`, `revision = ${toRevision}`);
    ctes.push(`changed AS (
      UPDATE evaluations SET ${assignments.join(', ')}
       WHERE eval_id = ${evalId} AND revision = ${p.add(decision.fromRevision)}
      RETURNING eval_id)`);
  }
  if (request.body !== undefined && decision.log === undefined) {
    ctes.push(`body AS (
      INSERT INTO evaluation_bodies (eval_id, kind, size, content, s3_key, blob_store)
      SELECT eval_id, ${p.add(request.body.kind)}, ${p.add(request.body.size)},
             ${p.add(request.body.content ?? null)}::bytea, ${p.add(request.body.s3Key ?? null)}::text,
             ${p.add(request.body.home ?? 's3')}
        FROM changed)`);
  }
  if (decision.metrics !== undefined) {
    // One INSERT of every point, whatever their number: five arrays, unnested side by side.
    const { points } = decision.metrics;
    ctes.push(`points AS (
      INSERT INTO evaluation_metrics (eval_id, revision, metric_name, metric_value, unit, step, measured_at, recorded_at)
      SELECT changed.eval_id, ${toRevision}, p.name, p.value, p.unit, p.step, p.measured_at, ${recordedAt}
        FROM changed,
             unnest(${p.add(points.map((m) => m.name))}::text[], ${p.add(points.map((m) => m.value))}::float8[],
                    ${p.add(points.map((m) => m.unit))}::text[], ${p.add(points.map((m) => m.step ?? null))}::bigint[],
                    ${p.add(points.map((m) => m.timestamp))}::timestamptz[]) AS p(name, value, unit, step, measured_at)
      RETURNING 1)`);
  }
  const moved = event.type === 'EvaluationBlobMoved' ? movedRow(event.data, p) : undefined;
  if (moved !== undefined) ctes.push(moved);
  ctes.push(`head AS (
    UPDATE event_log_head SET position = position + 1
     WHERE id = 1 AND EXISTS (SELECT 1 FROM changed)${moved !== undefined ? ' AND EXISTS (SELECT 1 FROM moved)' : ''}${
       // Read here so that PostgreSQL inserts the points before it takes the head's lock.
       decision.metrics !== undefined ? ' AND (SELECT count(*) FROM points) >= 0' : ''
     }
    RETURNING position)`);
  const security = securityRow(event, p, evalId, toRevision, recordedAt);
  if (security !== undefined) ctes.push(security);
  if (decision.log !== undefined) {
    // The row's stored size moved from where the segment starts (the UPDATE above matched the
    // revision it was read at): the log stays gap-free.
    const { log } = decision;
    const body = request.body;
    if (body === undefined) throw new Error('a log segment is written with its bytes');
    ctes.push(`segment AS (
      INSERT INTO evaluation_log_segments (eval_id, stream, start_offset, size, content, s3_key, blob_store,
                                           revision, position, recorded_at)
      SELECT ${evalId}, ${p.add(log.stream)}, ${p.add(log.offset)}, ${p.add(log.length)},
             ${p.add(body.content ?? null)}::bytea, ${p.add(body.s3Key ?? null)}::text, ${p.add(body.home ?? 's3')},
             ${toRevision}, head.position, ${recordedAt}
        FROM head)`);
  }
  const text = `WITH ${ctes.join(',\n')}
    INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, request_id, command_hash, recorded_at,
                                   reporter)
    SELECT head.position, ${evalId}, ${toRevision}, ${p.add(event.type)}, ${p.add(JSON.stringify(event.data))},
           ${p.add(request.requestId ?? null)}, ${p.add(request.commandHash)}, ${recordedAt}, ${p.add(request.reporter)}
      FROM head
    RETURNING position::text AS position`;
  return { text, values: p.values };
}

/**
 * The write model in PostgreSQL. A command is one statement: the state change, the body (if
 * kept in PostgreSQL), the next position from `event_log_head` and the event are data-modifying
 * CTEs chained so that each runs only if the previous one matched. The evaluation's row is
 * locked first and `event_log_head` last, so the lock that serialises appends is held only for
 * the rest of the statement and its commit (see docs/event-log.md).
 *
 * A write runs as `BEGIN` with its tenant's setting (shared/postgres/tenancy.ts), the statement,
 * `COMMIT`, all three sent at once on the pipelined session (one round trip, as the statement
 * alone; the head lock is not held across a round trip). A write whose call has a deadline
 * nearer than the sessions' statement_timeout is bounded to the time left: PostgreSQL cancels
 * it at the deadline, so a call the client gave up on does not commit later, unseen.
 *
 * A failed write says what is known of it: UnavailableError when PostgreSQL answered with an
 * error (the transaction rolled back: nothing was written) or the write was never sent;
 * CommitOutcomeUnknownError when the connection failed after it was sent.
 */
export function createPostgresEvaluationStore(pool: Pool): EvaluationStore {
  // The sessions' own statement_timeout (shared/postgres/pool.ts): a deadline further away
  // than this needs no bound of its own.
  const sessionTimeout = pool.options.statement_timeout;
  const sessionTimeoutMs = typeof sessionTimeout === 'number' && sessionTimeout > 0 ? sessionTimeout : Infinity;

  return {
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

    async append(request) {
      const { decision } = request;
      const boundMs = deadlineBound(request.deadline, sessionTimeoutMs);
      if (boundMs !== undefined && boundMs <= 0) {
        throw new DeadlineError("the call's deadline passed before the write was sent; nothing was written");
      }
      const { text, values } = appendStatement(request);
      const statement = preparedStatement(text, values);
      const client = await readOrUnavailable('append', () => pool.connect());
      return holdingSession(client, async (session): Promise<AppendOutcome> => {
        try {
          const { rows } = await queryInTransaction<AppendRow>(session, request.tenant, statement, boundMs);
          const row = rows[0];
          if (row === undefined) return { kind: 'conflict' };
          const recorded: RecordedEvent = {
            position: row.position,
            evalId: decision.evalId,
            revision: decision.toRevision,
            recordedAt: request.recordedAt.toISOString(),
            event: decision.event,
          };
          return { kind: 'appended', event: recorded };
        } catch (err) {
          // A concurrent duplicate (same request id, or the same eval id inserted first by
          // another transaction) lost the race: the caller re-reads and answers as the winner
          // did, and the session, which only rolled back, is kept.
          if (uniqueViolation(err) !== undefined) return { kind: 'conflict' };
          throw writeFailure(err, boundMs !== undefined);
        }
      });
    },
  };
}

/** The statement_timeout a write needs for the call's deadline, when it is nearer than the session's own. */
function deadlineBound(deadline: Date | undefined, sessionTimeoutMs: number): number | undefined {
  if (deadline === undefined) return undefined;
  const left = deadline.getTime() - Date.now();
  return left < sessionTimeoutMs ? Math.ceil(left) : undefined;
}

type AppendRow = { position: string };

/** What a failed write tells its caller: how much is known of what it did. */
function writeFailure(err: unknown, boundedByDeadline: boolean): unknown {
  const cause = postgresUnavailableCause(err);
  if (leavesOutcomeUnknown(err)) {
    return new CommitOutcomeUnknownError(
      `the connection to PostgreSQL failed after the write was sent (${cause ?? 'the session ended'}); it may or may not have committed`,
      { cause: err },
    );
  }
  if (cause === undefined) return err;
  const code = (err as { code?: unknown }).code;
  if (boundedByDeadline && code === '57014') {
    return new UnavailableError(
      "the write did not finish before the call's deadline (it waited for a lock, or PostgreSQL was slow) and PostgreSQL cancelled it; nothing was written",
      { cause: err },
    );
  }
  if (code === '55P03') {
    return new UnavailableError(
      "PostgreSQL: the write waited longer than lock_timeout for a lock another session holds (the event log's append lock, event_log_head, or this evaluation's row); nothing was written; retry with backoff",
      { cause: err },
    );
  }
  return new UnavailableError(`PostgreSQL refused the write: ${cause}; nothing was written; retry`, { cause: err });
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
