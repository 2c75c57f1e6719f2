import { createHash } from 'node:crypto';
import type { SubmitEvaluationRequest } from '../../shared/generated/crucible/storage/v1/command_service';

/**
 * The commands as a user would write them instead of the command service: one plain
 * transaction per command on two tables of its own, the evaluation's current state and its
 * events. No global order (no event_log_head), no tenant, no idempotency record, no body table:
 * the code and a small output are kept inline. The floor `bench/floors/pg-plain-commands.ts`
 * runs these statements and pgbench runs the submit's (`pgbenchSubmitScript`), so the two
 * floors of the commands scenario cannot drift apart.
 */

/**
 * Dropped and created again when the floor starts: every run starts empty and with this
 * schema. The unique (eval_id, revision) is what a user declares so that no two events claim
 * one revision; it is also what refuses a repeated start or completion (below).
 */
export const PLAIN_SCHEMA = `
DROP TABLE IF EXISTS bench_plain_events, bench_plain_evaluations;
CREATE TABLE bench_plain_evaluations (
  eval_id text PRIMARY KEY,
  status text NOT NULL,
  code text NOT NULL,
  code_hash text NOT NULL,
  code_size integer NOT NULL,
  language text NOT NULL,
  engine text NOT NULL,
  timeout_seconds integer NOT NULL,
  metadata jsonb NOT NULL,
  executor_id text,
  container_id text,
  exit_code integer,
  output bytea,
  revision integer NOT NULL,
  created_at timestamptz NOT NULL,
  started_at timestamptz,
  completed_at timestamptz,
  updated_at timestamptz NOT NULL
);
CREATE TABLE bench_plain_events (
  id bigserial PRIMARY KEY,
  eval_id text NOT NULL,
  revision integer NOT NULL,
  event_type text NOT NULL,
  data jsonb NOT NULL,
  recorded_at timestamptz NOT NULL,
  UNIQUE (eval_id, revision)
);`;

export const INSERT_EVALUATION = `
INSERT INTO bench_plain_evaluations
  (eval_id, status, code, code_hash, code_size, language, engine, timeout_seconds, metadata, revision, created_at, updated_at)
VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, 1, now(), now())`;

export const INSERT_QUEUED_EVENT = `
INSERT INTO bench_plain_events (eval_id, revision, event_type, data, recorded_at)
VALUES ($1, 1, 'EvaluationQueued', $2, now())
RETURNING id`;

/**
 * A state change is an UPDATE guarded by the status it leaves, then its event, sent together
 * (one round trip), so the event cannot wait for the UPDATE's answer: it takes the row's new
 * revision from the row itself, and only from a row in the new status. Hence no event when
 * the UPDATE matched nothing (the caller checks its row count), and for a repeated command,
 * whose row is already in the new status, the unique (eval_id, revision) fails the
 * transaction instead of recording the event twice.
 */
export const START = {
  update: `
UPDATE bench_plain_evaluations
   SET status = 'running', executor_id = $2, container_id = $3, started_at = now(),
       revision = revision + 1, updated_at = now()
 WHERE eval_id = $1 AND status = 'queued'`,
  event: `
INSERT INTO bench_plain_events (eval_id, revision, event_type, data, recorded_at)
SELECT eval_id, revision, 'EvaluationStarted', $2, now()
  FROM bench_plain_evaluations WHERE eval_id = $1 AND status = 'running'
RETURNING id, revision`,
} as const;

export const COMPLETE = {
  update: `
UPDATE bench_plain_evaluations
   SET status = 'completed', exit_code = $2, output = $3, completed_at = now(),
       revision = revision + 1, updated_at = now()
 WHERE eval_id = $1 AND status = 'running'`,
  event: `
INSERT INTO bench_plain_events (eval_id, revision, event_type, data, recorded_at)
SELECT eval_id, revision, 'EvaluationCompleted', $2, now()
  FROM bench_plain_evaluations WHERE eval_id = $1 AND status = 'completed'
RETURNING id, revision`,
} as const;

export const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

/** Parameters of the submit's two statements, `$1` first. JSON goes as text, as pgbench sends it. */
export function submitParameters(
  evalId: string,
  request: SubmitEvaluationRequest,
  now: Date,
): { evaluation: unknown[]; event: unknown[] } {
  const codeHash = sha256(request.code);
  const codeSize = Buffer.byteLength(request.code);
  const metadata = request.metadata ?? {};
  const data = {
    codeHash,
    codeSize,
    language: request.language,
    engine: request.engine,
    timeoutSeconds: request.timeoutSeconds,
    metadata,
    createdAt: now.toISOString(),
  };
  return {
    evaluation: [
      evalId,
      request.code,
      codeHash,
      codeSize,
      request.language,
      request.engine,
      request.timeoutSeconds,
      JSON.stringify(metadata),
    ],
    event: [evalId, JSON.stringify(data)],
  };
}

/** pgbench's names for the parameters of INSERT_EVALUATION and INSERT_QUEUED_EVENT, in order. */
const EVALUATION_PARAMETERS = ['id', 'code', 'code_hash', 'code_size', 'language', 'engine', 'timeout', 'metadata'];
const EVENT_PARAMETERS = ['id', 'data'];

/** `text` with `$n` written as pgbench's `:name` (it sends them as parameters again with -M prepared). */
function withPgbenchVariables(text: string, names: readonly string[]): string {
  return text.replace(/\$(\d+)/g, (_, n: string) => `:${names[Number(n) - 1]}`);
}

/**
 * The plain submit as a pgbench script: the same two statements, in one transaction sent as
 * one pipeline (as the floor's session sends it), their values those of `sample`, given as
 * `-D` variables (values pass as parameters, never spliced into the text, so no quoting).
 * Each client counts its transactions (`n`, a variable of its own) for a unique numeric id;
 * `base` (at least 10^12) keeps separate runs on one database apart.
 */
export function pgbenchSubmitScript(
  sample: SubmitEvaluationRequest,
  base: number,
): { script: string; variables: Record<string, string> } {
  const { evaluation, event } = submitParameters('', sample, new Date());
  const variables: Record<string, string> = { base: String(base), n: '0' };
  evaluation.forEach((value, i) => {
    if (i > 0) variables[EVALUATION_PARAMETERS[i]!] = String(value);
  });
  variables[EVENT_PARAMETERS[1]!] = String(event[1]);
  const script = [
    '\\set n :n + 1',
    '\\set id :base + :client_id * 1000000000 + :n',
    '\\startpipeline',
    'BEGIN;',
    `${withPgbenchVariables(INSERT_EVALUATION, EVALUATION_PARAMETERS).trim()};`,
    `${withPgbenchVariables(INSERT_QUEUED_EVENT, EVENT_PARAMETERS).trim()};`,
    'END;',
    '\\endpipeline',
    '',
  ].join('\n');
  return { script, variables };
}
