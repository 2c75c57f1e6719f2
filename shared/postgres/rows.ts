import type { EvaluationEvent, FailureKind } from '../domain';
import type { Status } from '../domain/status';

/**
 * One row of each table as `pg` hands it over (bigint as a decimal string, timestamptz as a
 * Date, jsonb parsed), written once beside the migrations that make the tables: readers take
 * the columns they select with Pick, so a column's type cannot drift between them.
 */

/** `evaluations`: the command side's write model, one row per evaluation. */
export interface EvaluationRow {
  eval_id: string;
  tenant_id: string;
  status: Status;
  code_hash: string;
  code_size: number;
  language: string;
  engine: string;
  timeout_seconds: number;
  metadata: Record<string, unknown>;
  executor_id: string | null;
  container_id: string | null;
  exit_code: number | null;
  failure_reason: FailureKind | null;
  cancel_reason: string | null;
  output_preview: Buffer | null;
  output_size: string;
  output_location: string;
  error_preview: string | null;
  error_size: string;
  error_location: string;
  created_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
  updated_at: Date;
  revision: string;
  stdout_bytes: string;
  stderr_bytes: string;
}

/** `evaluation_events`: the append-only log. */
export interface EvaluationEventRow {
  position: string;
  eval_id: string;
  revision: string;
  event_type: EvaluationEvent['type'];
  data: EvaluationEvent['data'];
  request_id: string | null;
  command_hash: string;
  recorded_at: Date;
  transaction_id: string;
  /** Generated: the size of `data` as JSON text (migration 7). */
  data_bytes: number;
}

/** `evaluation_bodies`: whole outputs and errors, inline or by S3 key. */
export interface EvaluationBodyRow {
  eval_id: string;
  kind: 'output' | 'error';
  size: string;
  content: Buffer | null;
  s3_key: string | null;
}
