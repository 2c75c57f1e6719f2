import type { Pool } from 'pg';
import type { EvaluationEvent, RecordedEvent } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import { isPostgresUnavailable, preparedStatement, uniqueViolation } from '../../../shared/postgres';
import type { AppendOutcome, AppendRequest, EvaluationStore } from '../application/ports';
import type { EvaluationSnapshot, LoggedCommand } from '../domain';
import type { Status } from '../../../shared/domain';

// One round trip: the evaluation with its first and latest command, and the earlier command
// with this request id (which may belong to another evaluation). $1 eval_id, $2 request_id.
// Exported for the bench's command floor, which must run the very statements it is a floor of.
export const LOAD_SQL = `
  SELECT 'state' AS source, e.eval_id, e.status, e.revision::text AS revision,
         cur.position::text AS position, cur.command_hash,
         sub.position::text AS submitted_position, sub.command_hash AS submitted_hash
    FROM evaluations e
    JOIN evaluation_events cur ON cur.eval_id = e.eval_id AND cur.revision = e.revision
    JOIN evaluation_events sub ON sub.eval_id = e.eval_id AND sub.revision = 1
   WHERE e.eval_id = $1
  UNION ALL
  SELECT 'request', r.eval_id, NULL, r.revision::text, r.position::text, r.command_hash, NULL, NULL
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
}

/** Column values of `evaluations` that an event sets. */
function columnsOf(event: EvaluationEvent, status: Status): Record<string, unknown> {
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
      INSERT INTO evaluations (eval_id, status, code, code_hash, code_size, language, engine,
                               timeout_seconds, metadata, created_at, updated_at, revision)
      VALUES (${evalId}, 'queued', ${p.add(request.code ?? '')}, ${p.add(d.codeHash)}, ${p.add(d.codeSize)},
              ${p.add(d.language)}, ${p.add(d.engine)}, ${p.add(d.timeoutSeconds)}, ${p.add(JSON.stringify(d.metadata))},
              ${p.add(d.createdAt)}, ${recordedAt}, ${toRevision})
      ON CONFLICT (eval_id) DO NOTHING
      RETURNING eval_id)`);
  } else {
    const assignments = Object.entries(columnsOf(event, decision.status)).map(
      ([column, value]) => `${column} = ${p.add(value)}`,
    );
    ctes.push(`changed AS (
      UPDATE evaluations SET ${assignments.join(', ')}, updated_at = ${recordedAt}, revision = ${toRevision}
       WHERE eval_id = ${evalId} AND revision = ${p.add(decision.fromRevision)}
      RETURNING eval_id)`);
  }
  if (request.body !== undefined) {
    ctes.push(`body AS (
      INSERT INTO evaluation_bodies (eval_id, kind, size, content, s3_key)
      SELECT eval_id, ${p.add(request.body.kind)}, ${p.add(request.body.size)},
             ${p.add(request.body.content ?? null)}::bytea, ${p.add(request.body.s3Key ?? null)}::text
        FROM changed)`);
  }
  ctes.push(`head AS (
    UPDATE event_log_head SET position = position + 1
     WHERE id = 1 AND EXISTS (SELECT 1 FROM changed)
    RETURNING position)`);
  const text = `WITH ${ctes.join(',\n')}
    INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, request_id, command_hash, recorded_at)
    SELECT head.position, ${evalId}, ${toRevision}, ${p.add(event.type)}, ${p.add(JSON.stringify(event.data))},
           ${p.add(request.requestId ?? null)}, ${p.add(request.commandHash)}, ${recordedAt}
      FROM head
    RETURNING position::text AS position`;
  return { text, values: p.values };
}

/**
 * The write model in PostgreSQL. A command is one autocommitted statement: the state change,
 * the body (if kept in PostgreSQL), the next position from `event_log_head` and the event are
 * data-modifying CTEs chained so that each runs only if the previous one matched. The
 * evaluation's row is locked first and `event_log_head` last, so the lock that serialises
 * appends is held only for the rest of the statement and its commit (see docs/event-log.md).
 */
export function createPostgresEvaluationStore(pool: Pool): EvaluationStore {
  async function run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isPostgresUnavailable(err)) {
        // pg-pool reports "no free connection in time" like a refused connection: under
        // overload the caller should hear that, not that the database is down.
        const overloaded = err instanceof Error && err.message.includes('timeout exceeded when trying to connect');
        throw new UnavailableError(
          overloaded
            ? `command service overloaded: no PostgreSQL connection free in time (${what}); retry with backoff`
            : `PostgreSQL is unavailable (${what}); retry`,
          { cause: err },
        );
      }
      throw err;
    }
  }

  return {
    load(evalId, requestId) {
      return run('load', async () => {
        const { rows } = await pool.query<LoadRow>(preparedStatement(LOAD_SQL, [evalId ?? '', requestId ?? null]));
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
          } else if (row.status !== null && row.submitted_position !== null && row.submitted_hash !== null) {
            snapshot = {
              evalId: row.eval_id,
              status: row.status,
              revision: row.revision,
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

    append(request) {
      return run('append', async () => {
        const { decision } = request;
        const { text, values } = appendStatement(request);
        try {
          const { rows } = await pool.query<{ position: string }>(preparedStatement(text, values));
          const row = rows[0];
          if (row === undefined) return { kind: 'conflict' } satisfies AppendOutcome;
          const recorded: RecordedEvent = {
            position: row.position,
            evalId: decision.evalId,
            revision: decision.toRevision,
            recordedAt: request.recordedAt.toISOString(),
            event: decision.event,
          };
          return { kind: 'appended', event: recorded } satisfies AppendOutcome;
        } catch (err) {
          // A concurrent duplicate (same request id, or the same eval id inserted first by
          // another transaction) lost the race: the caller re-reads and answers as the winner did.
          if (uniqueViolation(err) !== undefined) return { kind: 'conflict' } satisfies AppendOutcome;
          throw err;
        }
      });
    },
  };
}
