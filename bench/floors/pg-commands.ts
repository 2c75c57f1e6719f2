import { createHash } from 'node:crypto';
import { status as GrpcStatus, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { Pool } from 'pg';
import { monotonicFactory } from 'ulid';
import {
  EvaluationCommandServiceService,
  type CompleteEvaluationRequest,
  type StartEvaluationRequest,
  type SubmitEvaluationRequest,
  type SubmitEvaluationResponse,
} from '../../shared/generated/crucible/storage/v1/command_service';
import { requiredEnv, serveFloor } from './serve';

/**
 * Floor for commands: a bare grpc-js service doing the command service's SQL with the pg
 * driver (pool of 20, like the service): the load query, then one statement of chained
 * data-modifying CTEs (state change, body, next position from event_log_head, event). The SQL
 * is copied from services/command/postgres/evaluation-store.ts, not imported, so this stays a
 * floor: no validation, decision, idempotency checks, retries, S3 or publishing. Statements are
 * named (prepared once per connection), as the service's are.
 */
const pool = new Pool({
  connectionString: requiredEnv('DATABASE_URL'),
  max: 20,
  application_name: 'crucible-bench-floor',
});
const newId = monotonicFactory();

const LOAD_SQL = `
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

const APPEND_EVENT = `
  head AS (UPDATE event_log_head SET position = position + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM changed) RETURNING position)
  INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, request_id, command_hash, recorded_at)
  SELECT head.position, $1, $2, $4, $5, NULL, $6, $3 FROM head
  RETURNING position::text AS position`;

// $1 eval_id, $2 revision, $3 recorded_at, $4 event type, $5 event data, $6 command hash, then the state's own.
const SUBMIT_SQL = `WITH changed AS (
    INSERT INTO evaluations (eval_id, status, code, code_hash, code_size, language, engine, timeout_seconds, metadata, created_at, updated_at, revision)
    VALUES ($1, 'queued', $7, $8, $9, $10, $11, $12, $13, $3, $3, $2)
    ON CONFLICT (eval_id) DO NOTHING RETURNING eval_id),
  ${APPEND_EVENT}`;

const START_SQL = `WITH changed AS (
    UPDATE evaluations SET status = 'running', executor_id = $7, container_id = $8, started_at = $3, updated_at = $3, revision = $2
     WHERE eval_id = $1 AND revision = $9 RETURNING eval_id),
  ${APPEND_EVENT}`;

const COMPLETE_SQL = `WITH changed AS (
    UPDATE evaluations SET status = 'completed', exit_code = $7, completed_at = $3, output_preview = $8, output_size = $9,
           output_location = 'postgres', updated_at = $3, revision = $2
     WHERE eval_id = $1 AND revision = $10 RETURNING eval_id),
  body AS (INSERT INTO evaluation_bodies (eval_id, kind, size, content, s3_key) SELECT eval_id, 'output', $9, $11::bytea, NULL FROM changed),
  ${APPEND_EVENT}`;

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

interface Loaded {
  revision: string;
}

async function load(evalId: string): Promise<Loaded | undefined> {
  const { rows } = await pool.query<{ source: string; revision: string }>({
    name: 'load',
    text: LOAD_SQL,
    values: [evalId, null],
  });
  return rows.find((r) => r.source === 'state');
}

type Response = SubmitEvaluationResponse;

/** Runs the load query, then the append; answers like the service does. */
function handle<Req extends { evalId: string }>(
  run: (request: Req) => Promise<Response>,
): (call: ServerUnaryCall<Req, Response>, callback: sendUnaryData<Response>) => void {
  return (call, callback) => {
    run(call.request).then(
      (response) => callback(null, response),
      (err: Error) => callback({ code: GrpcStatus.INTERNAL, details: err.message }),
    );
  };
}

async function append(
  sql: string,
  evalId: string,
  revision: number,
  type: string,
  data: object,
  hash: string,
  rest: unknown[],
): Promise<Response> {
  const { rows } = await pool.query<{ position: string }>({
    name: type,
    text: sql,
    values: [evalId, revision, new Date().toISOString(), type, JSON.stringify(data), hash, ...rest],
  });
  const position = rows[0]?.position;
  if (position === undefined) throw new Error(`write conflict on ${evalId}`);
  return { evalId, revision: String(revision), position };
}

async function change<Req extends { evalId: string }>(
  request: Req,
  build: (from: number) => Promise<Response>,
): Promise<Response> {
  const loaded = await load(request.evalId);
  if (loaded === undefined) throw new Error(`unknown evaluation ${request.evalId}`);
  return build(Number(loaded.revision));
}

serveFloor(
  EvaluationCommandServiceService,
  {
    submitEvaluation: handle<SubmitEvaluationRequest>(async (r) => {
      const evalId = r.evalId !== '' ? r.evalId : newId();
      await load(evalId);
      const metadata = r.metadata ?? {};
      const data = {
        codeHash: sha256(r.code),
        codeSize: Buffer.byteLength(r.code),
        language: r.language,
        engine: r.engine,
        timeoutSeconds: r.timeoutSeconds,
        metadata,
        createdAt: new Date().toISOString(),
      };
      return append(SUBMIT_SQL, evalId, 1, 'EvaluationQueued', data, sha256(JSON.stringify(r)), [
        r.code,
        data.codeHash,
        data.codeSize,
        r.language,
        r.engine,
        r.timeoutSeconds,
        JSON.stringify(metadata),
      ]);
    }),
    startEvaluation: handle<StartEvaluationRequest>((r) =>
      change(r, (from) => {
        const data = { executorId: r.executorId, containerId: r.containerId, startedAt: new Date().toISOString() };
        return append(START_SQL, r.evalId, from + 1, 'EvaluationStarted', data, sha256(JSON.stringify(r)), [
          r.executorId,
          r.containerId,
          from,
        ]);
      }),
    ),
    completeEvaluation: handle<CompleteEvaluationRequest>((r) =>
      change(r, (from) => {
        const preview = r.output.subarray(0, 1024);
        const output = { previewBase64: preview.toString('base64'), size: r.output.length, location: 'postgres' };
        const data = { exitCode: r.exitCode, completedAt: new Date().toISOString(), output };
        return append(COMPLETE_SQL, r.evalId, from + 1, 'EvaluationCompleted', data, sha256(r.output), [
          r.exitCode,
          preview,
          r.output.length,
          from,
          r.output,
        ]);
      }),
    ),
  },
  () => pool.end(),
);
