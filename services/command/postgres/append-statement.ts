import type { EvaluationEvent } from '../../../shared/domain';
import type { AppendRequest } from '../application/ports';
import type { Decision } from '../domain';
import { STATE_ROW } from './state-row';

type AppendDecision = Extract<Decision, { kind: 'append' }>;

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
 * still, as a table and a condition on its rows `t`. The evaluation's row changes only when it
 * matches (moved already, or another key: no row changes, no event, the write reports a
 * conflict); a condition on the blob's own UPDATE alone would come too late, since every
 * data-modifying CTE runs whether or not what follows it matches.
 */
function blobRow(
  data: Extract<EvaluationEvent, { type: 'EvaluationBlobMoved' }>['data'],
  evalId: string,
  p: Params,
): { table: string; matches: string; to: string } {
  const row =
    data.kind === 'stdout' || data.kind === 'stderr'
      ? {
          table: 'evaluation_log_segments',
          which: `t.stream = ${p.add(data.kind)} AND t.start_offset = ${p.add(data.offset ?? 0)}`,
        }
      : { table: 'evaluation_bodies', which: `t.kind = ${p.add(data.kind)}` };
  const to = p.add(data.to);
  return {
    table: row.table,
    matches: `t.eval_id = ${evalId} AND ${row.which} AND t.s3_key = ${p.add(data.key)} AND t.blob_store <> ${to}`,
    to,
  };
}

/**
 * The one statement that appends a command (see createPostgresEvaluationStore), with its
 * parameters: state change, body, next position, event. It returns the state it leaves (a
 * StateRow, the event's position in `position`), or no row when the state row did not match
 * (a conflict). Exported for the bench's command floor.
 */
export function appendStatement(request: AppendRequest): { text: string; values: unknown[] } {
  const { decision } = request;
  const { event } = decision;
  const p = new Params();
  const evalId = p.add(decision.evalId);
  const toRevision = p.add(decision.toRevision);
  const recordedAt = p.add(request.recordedAt.toISOString());
  const ctes: string[] = [];

  // A request id already logged (a retry decided against a guess, not a load) changes nothing:
  // a conflict, after which the command loads and answers as a repeat. Left to the unique index
  // alone, it would abort the whole batch's transaction, and every neighbour would be sent again.
  const requestIdFree =
    request.requestId === undefined
      ? 'TRUE'
      : `NOT EXISTS (SELECT 1 FROM evaluation_events WHERE request_id = ${p.add(request.requestId)})`;
  const blob = event.type === 'EvaluationBlobMoved' ? blobRow(event.data, evalId, p) : undefined;
  if (event.type === 'EvaluationQueued') {
    const d = event.data;
    ctes.push(`changed AS (
      INSERT INTO evaluations (eval_id, status, code_hash, code_size, language, engine,
                               timeout_seconds, metadata, created_at, updated_at, revision)
      SELECT ${evalId}, 'queued', ${p.add(d.codeHash)}, ${p.add(d.codeSize)},
             ${p.add(d.language)}, ${p.add(d.engine)}, ${p.add(d.timeoutSeconds)}, ${p.add(JSON.stringify(d.metadata))},
             ${p.add(d.createdAt)}, ${recordedAt}, ${toRevision}
       WHERE ${requestIdFree}
      ON CONFLICT (eval_id) DO NOTHING
      RETURNING *)`);
  } else {
    const assignments = Object.entries(columnsOf(decision)).map(([column, value]) => `${column} = ${p.add(value)}`);
    assignments.push(`updated_at = ${recordedAt}`, `revision = ${toRevision}`);
    const blobMatches = blob === undefined ? '' : ` AND EXISTS (SELECT 1 FROM ${blob.table} t WHERE ${blob.matches})`;
    ctes.push(`changed AS (
      UPDATE evaluations SET ${assignments.join(', ')}
       WHERE eval_id = ${evalId} AND revision = ${p.add(decision.fromRevision)} AND archived_at IS NULL
         AND ${requestIdFree}${blobMatches}
      RETURNING *)`);
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
  const moved =
    blob === undefined
      ? undefined
      : `moved AS (
    UPDATE ${blob.table} t SET blob_store = ${blob.to}
      FROM changed WHERE ${blob.matches}
    RETURNING 1)`;
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
  ctes.push(`logged AS (
    INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, request_id, command_hash, recorded_at,
                                   reporter)
    SELECT head.position, ${evalId}, ${toRevision}, ${p.add(event.type)}, ${p.add(JSON.stringify(event.data))},
           ${p.add(request.requestId ?? null)}, ${p.add(request.commandHash)}, ${recordedAt}, ${p.add(request.reporter)}
      FROM head
    RETURNING position, command_hash)`);
  // The state the write leaves, as a load would read it: the statement's own snapshot cannot
  // see the event it inserts, so a submit's first command is the one just logged.
  // A LEFT JOIN: a committed write must return its row whatever else is missing, or it would
  // read as a conflict and be decided again.
  const submitted =
    event.type === 'EvaluationQueued'
      ? 'CROSS JOIN logged sub'
      : `LEFT JOIN LATERAL (SELECT position, command_hash FROM evaluation_events
                             WHERE eval_id = e.eval_id AND revision = 1 LIMIT 1) sub ON TRUE`;
  const text = `WITH ${ctes.join(',\n')}
    ${STATE_ROW}
      FROM changed e CROSS JOIN logged cur ${submitted}`;
  return { text, values: p.values };
}
