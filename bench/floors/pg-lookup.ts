import { status as GrpcStatus, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { Pool } from 'pg';
import { DEFAULT_TENANT, parseStatus, statusToProto } from '../../shared/domain';
import { queryAs, type EvaluationRow } from '../../shared/postgres';
import {
  EvaluationStatus,
  FailureReason,
  type Evaluation,
} from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  EvaluationQueryServiceService,
  type GetEvaluationRequest,
  type GetEvaluationResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { requiredEnv, serveFloor } from './serve';

/**
 * The alternative to a read model: GetEvaluation answered by a bare grpc-js service reading
 * `evaluations` by primary key (pg driver, pool of 20 like the command service).
 */
const pool = new Pool({
  connectionString: requiredEnv('DATABASE_URL'),
  max: 20,
  application_name: 'crucible-bench-floor',
  // As the service's sessions (shared/postgres/pool.ts): the tenant's BEGIN, the statement and
  // COMMIT go out in one round trip.
  pipeline: true,
});

const SQL = `SELECT eval_id, status, code_hash, code_size, language, engine, timeout_seconds, metadata, executor_id,
                    container_id, exit_code, failure_reason, cancel_reason, output_preview, output_size, output_location,
                    error_preview, error_size, error_location, created_at, started_at, completed_at, updated_at, revision,
                    stdout_bytes, stderr_bytes
               FROM evaluations WHERE eval_id = $1`;

function wireStatus(stored: string): EvaluationStatus {
  const status = parseStatus(stored);
  return status === undefined ? EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED : statusToProto(status);
}

function toEvaluation(row: EvaluationRow): Evaluation {
  const runtime =
    row.started_at !== null && row.completed_at !== null ? row.completed_at.getTime() - row.started_at.getTime() : 0;
  return {
    evalId: row.eval_id,
    tenantId: row.tenant_id,
    status: wireStatus(row.status),
    stdoutBytes: String(row.stdout_bytes),
    stderrBytes: String(row.stderr_bytes),
    codeHash: row.code_hash,
    codeSize: String(row.code_size),
    language: row.language,
    engine: row.engine,
    timeoutSeconds: row.timeout_seconds,
    executorId: row.executor_id ?? '',
    containerId: row.container_id ?? '',
    exitCode: row.exit_code ?? undefined,
    createdAt: row.created_at,
    startedAt: row.started_at ?? undefined,
    completedAt: row.completed_at ?? undefined,
    runtimeMs: String(runtime),
    outputPreview: row.output_preview ?? Buffer.alloc(0),
    outputSize: row.output_size,
    outputLocation: row.output_location,
    errorPreview: row.error_preview ?? '',
    errorSize: row.error_size,
    errorLocation: row.error_location,
    failureReason:
      row.failure_reason === 'timeout'
        ? FailureReason.FAILURE_REASON_TIMEOUT
        : row.failure_reason === 'error'
          ? FailureReason.FAILURE_REASON_ERROR
          : FailureReason.FAILURE_REASON_UNSPECIFIED,
    cancelReason: row.cancel_reason ?? '',
    metadata: row.metadata,
    revision: row.revision,
    position: '0',
    metrics: [],
    lastEventType: 0,
    violations: [],
    updatedAt: row.updated_at,
  };
}

serveFloor(
  EvaluationQueryServiceService,
  {
    getEvaluation(
      call: ServerUnaryCall<GetEvaluationRequest, GetEvaluationResponse>,
      callback: sendUnaryData<GetEvaluationResponse>,
    ) {
      queryAs<EvaluationRow>(pool, DEFAULT_TENANT, { text: SQL, values: [call.request.evalId] }).then(
        ({ rows }) => {
          const row = rows[0];
          if (row === undefined) callback({ code: GrpcStatus.NOT_FOUND, details: 'no such evaluation' });
          else callback(null, { evaluation: toEvaluation(row) });
        },
        (err: Error) => callback({ code: GrpcStatus.INTERNAL, details: err.message }),
      );
    },
  },
  () => pool.end(),
);
