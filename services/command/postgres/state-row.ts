import type { Status } from '../../../shared/domain';
import type { EvaluationSnapshot, LoggedCommand } from '../domain';

/**
 * An evaluation's state as a command decides on it, read as one row from an evaluation `e` with
 * the command that wrote its current revision `cur` and its submit `sub`. A load selects it
 * (./batch-load.ts), and so does every append, of the state it leaves (./append-statement.ts):
 * one column list and one mapping (snapshotOf), so what a write reports is what a load would read.
 */
export const STATE_ROW = `SELECT 'state' AS source, e.eval_id, NULL::text AS request_id, e.status, e.revision::text AS revision,
         cur.position::text AS position, cur.command_hash,
         sub.position::text AS submitted_position, sub.command_hash AS submitted_hash,
         e.created_at, e.completed_at, e.metric_names,
         e.stdout_bytes::text AS stdout_bytes, e.stderr_bytes::text AS stderr_bytes, e.executor_id, e.archived_at`;

/** A row of STATE_ROW, or of a load's earlier command with the request id (source 'request', state columns NULL). */
export interface StateRow {
  source: 'state' | 'request';
  eval_id: string;
  request_id: string | null;
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
  archived_at: Date | null;
}

/** The command a row names: the evaluation's latest (a state row), or the earlier one with the request id. */
export function loggedCommandOf(row: StateRow): LoggedCommand {
  return { evalId: row.eval_id, revision: row.revision, position: row.position, commandHash: row.command_hash };
}

/** The evaluation a state row holds; undefined for a row without one. */
export function snapshotOf(row: StateRow): EvaluationSnapshot | undefined {
  if (row.status === null || row.submitted_position === null || row.submitted_hash === null || row.created_at === null)
    return undefined;
  return {
    evalId: row.eval_id,
    status: row.status,
    revision: row.revision,
    createdAt: row.created_at,
    ...(row.completed_at !== null ? { endedAt: row.completed_at } : {}),
    metricNames: row.metric_names ?? [],
    logBytes: { stdout: Number(row.stdout_bytes ?? 0), stderr: Number(row.stderr_bytes ?? 0) },
    ...(row.executor_id !== null ? { executorId: row.executor_id } : {}),
    ...(row.archived_at !== null ? { archivedAt: row.archived_at } : {}),
    latest: loggedCommandOf(row),
    submitted: {
      evalId: row.eval_id,
      revision: '1',
      position: row.submitted_position,
      commandHash: row.submitted_hash,
    },
  };
}
