import { status as GrpcStatus, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { Pool, type QueryConfig, type QueryResult } from 'pg';
import { monotonicFactory } from 'ulid';
import {
  EvaluationCommandServiceService,
  type CompleteEvaluationRequest,
  type StartEvaluationRequest,
  type SubmitEvaluationRequest,
  type SubmitEvaluationResponse,
} from '../../shared/generated/crucible/storage/v1/command_service';
import { holdingSession, preparedStatement } from '../../shared/postgres';
import {
  COMPLETE,
  INSERT_EVALUATION,
  INSERT_QUEUED_EVENT,
  PLAIN_SCHEMA,
  START,
  submitParameters,
} from '../support/plain-commands';
import { requiredEnv, serveFloor } from './serve';

/**
 * Floor for commands: what a user would write instead of the command service. A bare grpc-js
 * service with the pg driver (pool of 20, pipelined sessions, as the service's) running one
 * plain transaction per command on tables of its own (bench/support/plain-commands.ts): the
 * evaluation's row and its event, BEGIN and COMMIT included, sent in one round trip. No global
 * order, tenant, idempotency, validation, S3 or publishing. Statements are prepared once per
 * connection, as the service's are and as pgbench's are with -M prepared. It connects as the
 * database's owner: it creates its tables at start.
 */
const pool = new Pool({
  connectionString: requiredEnv('DATABASE_URL'),
  max: 20,
  application_name: 'crucible-bench-floor',
  pipeline: true,
});
const newId = monotonicFactory();

type Response = SubmitEvaluationResponse;

function handle<Req>(
  run: (request: Req) => Promise<Response>,
): (call: ServerUnaryCall<Req, Response>, callback: sendUnaryData<Response>) => void {
  return (call, callback) => {
    run(call.request).then(
      (response) => callback(null, response),
      (err: Error) => callback({ code: GrpcStatus.INTERNAL, details: err.message }),
    );
  };
}

/**
 * BEGIN, `statements` and COMMIT on one session, sent without waiting for each other: one
 * round trip on a pipelined session. The first error is the cause: the statements after it
 * fail as "transaction is aborted", and COMMIT then rolls back.
 */
async function transaction(statements: readonly QueryConfig[]): Promise<QueryResult[]> {
  return holdingSession(await pool.connect(), async (client) => {
    const settled = await Promise.allSettled([
      client.query('BEGIN'),
      ...statements.map((statement) => client.query(statement)),
      client.query('COMMIT'),
    ]);
    const results: QueryResult[] = [];
    for (const outcome of settled) {
      if (outcome.status === 'rejected') throw outcome.reason;
      results.push(outcome.value);
    }
    return results.slice(1, -1);
  });
}

/** A state change (START or COMPLETE): its UPDATE, then its event, in one transaction. */
async function change(
  evalId: string,
  statements: { readonly update: string; readonly event: string },
  values: unknown[],
  data: object,
): Promise<Response> {
  const [updated, inserted] = await transaction([
    preparedStatement(statements.update, [evalId, ...values]),
    preparedStatement(statements.event, [evalId, JSON.stringify(data)]),
  ]);
  // No row in the status the command leaves: nothing was written (see START).
  const event = inserted?.rows[0] as { id: string; revision: number } | undefined;
  if (updated?.rowCount !== 1 || event === undefined)
    throw new Error(`${evalId} is not in the status this command leaves`);
  return { evalId, revision: String(event.revision), position: String(event.id) };
}

function serve(): void {
  serveFloor(
    EvaluationCommandServiceService,
    {
      submitEvaluation: handle<SubmitEvaluationRequest>(async (r) => {
        const evalId = r.evalId !== '' ? r.evalId : newId();
        const { evaluation, event } = submitParameters(evalId, r, new Date());
        const [, inserted] = await transaction([
          preparedStatement(INSERT_EVALUATION, evaluation),
          preparedStatement(INSERT_QUEUED_EVENT, event),
        ]);
        const position = (inserted?.rows[0] as { id: string } | undefined)?.id;
        if (position === undefined) throw new Error(`no event recorded for ${evalId}`);
        return { evalId, revision: '1', position: String(position) };
      }),
      startEvaluation: handle<StartEvaluationRequest>((r) =>
        change(r.evalId, START, [r.executorId, r.containerId], {
          executorId: r.executorId,
          containerId: r.containerId,
          startedAt: new Date().toISOString(),
        }),
      ),
      completeEvaluation: handle<CompleteEvaluationRequest>((r) =>
        change(r.evalId, COMPLETE, [r.exitCode, r.output], {
          exitCode: r.exitCode,
          completedAt: new Date().toISOString(),
          output: { size: r.output.length, location: 'postgres' },
        }),
      ),
    },
    () => pool.end(),
  );
}

// The tables exist before the floor announces itself (serveFloor's `listening` line).
pool.query(PLAIN_SCHEMA).then(serve, (err: Error) => {
  process.stderr.write(`creating the floor's tables failed: ${err.message}\n`);
  process.exit(1);
});
