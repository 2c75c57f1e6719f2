import type { Pool } from 'pg';
import { EvaluationStatus } from '../../shared/generated/crucible/storage/v1/evaluation';

/** Creation time of evaluation 0: evaluation i is created i ms later. */
export const CREATED_FROM = new Date('2026-01-01T00:00:00Z');

/** Languages by `i % 4`, in the rows and in the events alike: enough variety for a filter to select a quarter. */
export const LANGUAGES = ['python', 'go', 'rust', 'java'] as const;

/** What generateEventLog writes for evaluation i (1-based), as a list or a count must see it. */
export interface GeneratedEvaluation {
  readonly evalId: string;
  readonly status: EvaluationStatus;
  readonly language: string;
  readonly createdAt: Date;
}

const ID_PREFIX = 'bench-';

/**
 * The TypeScript twin of generateEventLog's SQL (keep them in step): what the read models must
 * hold after a rebuild, so that the bench can tell a right answer from a fast wrong one.
 */
export function generatedEvaluation(i: number): GeneratedEvaluation {
  return {
    evalId: `${ID_PREFIX}${String(i).padStart(8, '0')}`,
    status: i % 2 === 0 ? EvaluationStatus.EVALUATION_STATUS_COMPLETED : EvaluationStatus.EVALUATION_STATUS_RUNNING,
    language: LANGUAGES[i % LANGUAGES.length]!,
    createdAt: new Date(CREATED_FROM.getTime() + i),
  };
}

/** The i of a generated evaluation's id; undefined for any other id. */
export function generatedIndex(evalId: string): number | undefined {
  const digits = evalId.startsWith(ID_PREFIX) ? evalId.slice(ID_PREFIX.length) : '';
  return /^\d{8}$/.test(digits) ? Number(digits) : undefined;
}

/**
 * Writes an event log of `evaluations * 2` events straight into PostgreSQL (generate_series,
 * no service): each evaluation is queued, then started (odd) or completed with a small output
 * kept in PostgreSQL (even), with `evaluations`, `evaluation_bodies` and `event_log_head` to
 * match, as the command service would have left them. Evaluation i is generatedEvaluation(i).
 */
export async function generateEventLog(pool: Pool, evaluations: number): Promise<number> {
  const client = await pool.connect();
  // $1 evaluations, $2 the first creation time, $3 the languages: one source for SQL and model.
  const params = [evaluations, CREATED_FROM.toISOString(), LANGUAGES];
  try {
    await client.query('BEGIN');
    // Skips the foreign-key triggers for this bulk load (the rows are consistent by
    // construction): it halves the time to write a million events.
    await client.query(`SET LOCAL session_replication_role = replica`);
    await client.query(
      `INSERT INTO evaluations (eval_id, status, code_hash, code_size, language, engine, timeout_seconds, metadata,
                                executor_id, container_id, exit_code, output_preview, output_size, output_location,
                                created_at, started_at, completed_at, updated_at, revision)
       SELECT 'bench-' || lpad(i::text, 8, '0'), CASE WHEN i % 2 = 0 THEN 'completed' ELSE 'running' END,
              encode(sha256(('print(' || i || ')')::bytea), 'hex'), length('print(' || i || ')'),
              ($3::text[])[i % cardinality($3::text[]) + 1], 'docker', 60, jsonb_build_object('suite', 'bench', 'task', i % 100),
              'executor-1', 'container-' || i, CASE WHEN i % 2 = 0 THEN 0 END,
              CASE WHEN i % 2 = 0 THEN 'ok'::bytea END, CASE WHEN i % 2 = 0 THEN 2 ELSE 0 END,
              CASE WHEN i % 2 = 0 THEN 'postgres' ELSE '' END,
              t, t + interval '1 second', CASE WHEN i % 2 = 0 THEN t + interval '2 seconds' END,
              t + interval '2 seconds', 2
         FROM generate_series(1, $1::int) AS i, LATERAL (SELECT $2::timestamptz + i * interval '1 millisecond' AS t) AS ts`,
      params,
    );
    await client.query(
      `INSERT INTO evaluation_bodies (eval_id, kind, size, content)
       SELECT 'bench-' || lpad(i::text, 8, '0'), 'output', 2, 'ok'::bytea FROM generate_series(2, $1::int, 2) AS i
       UNION ALL
       SELECT 'bench-' || lpad(i::text, 8, '0'), 'code', length('print(' || i || ')'), ('print(' || i || ')')::bytea
         FROM generate_series(1, $1::int) AS i`,
      [evaluations],
    );
    await client.query(
      `INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, command_hash, recorded_at)
       SELECT 2 * i - 2 + r, 'bench-' || lpad(i::text, 8, '0'), r,
              CASE WHEN r = 1 THEN 'EvaluationQueued' WHEN i % 2 = 0 THEN 'EvaluationCompleted' ELSE 'EvaluationStarted' END,
              CASE WHEN r = 1 THEN jsonb_build_object('codeHash', encode(sha256(('print(' || i || ')')::bytea), 'hex'),
                                                      'codeSize', length('print(' || i || ')'),
                                                      'language', ($3::text[])[i % cardinality($3::text[]) + 1],
                                                      'engine', 'docker', 'timeoutSeconds', 60,
                                                      'metadata', jsonb_build_object('suite', 'bench', 'task', i % 100),
                                                      'createdAt', to_json(t)#>>'{}')
                   WHEN i % 2 = 0 THEN jsonb_build_object('exitCode', 0, 'completedAt', to_json(t + interval '2 seconds')#>>'{}',
                                                          'output', jsonb_build_object('previewBase64', 'b2s=', 'size', 2, 'location', 'postgres'))
                   ELSE jsonb_build_object('executorId', 'executor-1', 'containerId', 'container-' || i,
                                           'startedAt', to_json(t + interval '1 second')#>>'{}') END,
              md5(i || ':' || r) || md5(r || ':' || i), t + r * interval '1 second'
         FROM generate_series(1, $1::int) AS i, generate_series(1, 2) AS r,
              LATERAL (SELECT $2::timestamptz + i * interval '1 millisecond' AS t) AS ts
        ORDER BY 1`,
      params,
    );
    await client.query(`UPDATE event_log_head SET position = $1 WHERE id = 1`, [evaluations * 2]);
    await client.query('COMMIT');
    await client.query('ANALYZE evaluations, evaluation_events, evaluation_bodies');
    return evaluations * 2;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
}
