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
import type { AppendRequest } from '../../services/command/application/ports';
import { appendStatement } from '../../services/command/postgres/evaluation-store';
import { LOAD_ONE_SQL } from '../../services/command/postgres/batch-load';
import { DEFAULT_TENANT, type EvaluationEvent, type Status } from '../../shared/domain';
import { preparedStatement, queryAs } from '../../shared/postgres';
import { requiredEnv, serveFloor } from './serve';

/**
 * Floor for commands: a bare grpc-js service running the command service's own SQL with the
 * pg driver (pool of 20, like the service): its load query, then its one append statement
 * (chained data-modifying CTEs: state change, body, next position from event_log_head, event),
 * both imported from services/command/postgres/evaluation-store.ts so that the floor cannot
 * drift from what it is the floor of. Nothing else of the service: no validation, decision,
 * idempotency checks, retries, S3 or publishing. Statements are prepared once per connection,
 * as the service's are.
 */
const pool = new Pool({
  connectionString: requiredEnv('DATABASE_URL'),
  max: 20,
  application_name: 'crucible-bench-floor',
  // As the service's sessions (shared/postgres/pool.ts): the tenant's BEGIN, the statement and
  // COMMIT go out in one round trip.
  pipeline: true,
});
const newId = monotonicFactory();

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

async function load(evalId: string): Promise<{ revision: string } | undefined> {
  const { rows } = await queryAs<{ source: string; revision: string }>(
    pool,
    DEFAULT_TENANT,
    preparedStatement(LOAD_ONE_SQL, [evalId, null]),
  );
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

/** The service's append statement for `event`, taking the evaluation from revision `from`. */
async function append(
  evalId: string,
  from: number,
  status: Status,
  event: EvaluationEvent,
  commandHash: string,
  extra: Pick<AppendRequest, 'body'> = {},
): Promise<Response> {
  const revision = String(from + 1);
  const { text, values } = appendStatement({
    decision: { kind: 'append', evalId, event, fromRevision: String(from), toRevision: revision, status },
    commandHash,
    tenant: DEFAULT_TENANT,
    recordedAt: new Date(),
    reporter: 'anonymous',
    ...extra,
  });
  const { rows } = await queryAs<{ position: string }>(pool, DEFAULT_TENANT, preparedStatement(text, values));
  const position = rows[0]?.position;
  if (position === undefined) throw new Error(`write conflict on ${evalId}`);
  return { evalId, revision, position };
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
      const data = {
        codeHash: sha256(r.code),
        codeSize: Buffer.byteLength(r.code),
        language: r.language,
        engine: r.engine,
        timeoutSeconds: r.timeoutSeconds,
        metadata: r.metadata ?? {},
        createdAt: new Date().toISOString(),
      };
      const code = Buffer.from(r.code, 'utf8');
      return append(evalId, 0, 'queued', { type: 'EvaluationQueued', data }, sha256(JSON.stringify(r)), {
        body: { kind: 'code', size: code.length, content: code },
      });
    }),
    startEvaluation: handle<StartEvaluationRequest>((r) =>
      change(r, (from) => {
        const data = { executorId: r.executorId, containerId: r.containerId, startedAt: new Date().toISOString() };
        return append(r.evalId, from, 'running', { type: 'EvaluationStarted', data }, sha256(JSON.stringify(r)));
      }),
    ),
    completeEvaluation: handle<CompleteEvaluationRequest>((r) =>
      change(r, (from) => {
        const output = {
          previewBase64: r.output.subarray(0, 1024).toString('base64'),
          size: r.output.length,
          location: 'postgres' as const,
        };
        const data = { exitCode: r.exitCode, completedAt: new Date().toISOString(), output };
        return append(r.evalId, from, 'completed', { type: 'EvaluationCompleted', data }, sha256(r.output), {
          body: { kind: 'output', size: r.output.length, content: r.output },
        });
      }),
    ),
  },
  () => pool.end(),
);
