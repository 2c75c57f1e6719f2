import type {
  CompleteEvaluationRequest,
  EvaluationCommandServiceClient,
  StartEvaluationRequest,
  SubmitEvaluationRequest,
} from '../../shared/generated/crucible/storage/v1/command_service';
import type { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import type { Evaluation } from '../../shared/generated/crucible/storage/v1/evaluation';
import { SETUP_DEADLINE_MS, unary } from './grpc';
import { forEachConcurrently } from './load';

/** A typical submit: a few hundred bytes of code and small metadata; the server assigns the id. */
export function submitRequest(n: number): SubmitEvaluationRequest {
  return {
    evalId: '',
    code: `import json\n\ndef solve(xs):\n    return sorted(set(xs))[:10]\n\nprint(json.dumps(solve(list(range(${n}, 0, -1)))))\n`,
    language: 'python',
    engine: 'docker',
    timeoutSeconds: 60,
    metadata: { suite: 'bench', model: 'model-a', task: n % 100 },
    requestId: '',
  };
}

export function startRequest(evalId: string): StartEvaluationRequest {
  return { evalId, executorId: 'executor-1', containerId: `container-${evalId}`, requestId: '' };
}

const SMALL_OUTPUT = Buffer.from('[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n'.repeat(4));

export function completeRequest(evalId: string, output: Buffer = SMALL_OUTPUT): CompleteEvaluationRequest {
  return { evalId, output, exitCode: 0, requestId: '' };
}

/**
 * A running evaluation (submitted and started). `timeoutSeconds` must outlast what the caller
 * does with it: the service fails an evaluation that runs past it (and its grace) with TIMEOUT.
 */
export async function runningEvaluation(
  command: EvaluationCommandServiceClient,
  n: number,
  timeoutSeconds = 600,
): Promise<string> {
  const { evalId } = await unary(
    command,
    command.submitEvaluation,
    { ...submitRequest(n), timeoutSeconds },
    SETUP_DEADLINE_MS,
  );
  await unary(command, command.startEvaluation, startRequest(evalId), SETUP_DEADLINE_MS);
  return evalId;
}

/** Runs `count` whole lifecycles (submit, start, complete); resolves with the ids and the last position. */
export async function seedCompletedEvaluations(
  command: EvaluationCommandServiceClient,
  count: number,
  concurrency = 16,
): Promise<{ ids: string[]; lastPosition: bigint }> {
  const ids: string[] = [];
  let lastPosition = 0n;
  await forEachConcurrently(
    Array.from({ length: count }, (_, i) => i),
    concurrency,
    async (n) => {
      const { evalId } = await unary(command, command.submitEvaluation, submitRequest(n), SETUP_DEADLINE_MS);
      await unary(command, command.startEvaluation, startRequest(evalId), SETUP_DEADLINE_MS);
      const { position } = await unary(command, command.completeEvaluation, completeRequest(evalId), SETUP_DEADLINE_MS);
      ids.push(evalId);
      if (BigInt(position) > lastPosition) lastPosition = BigInt(position);
    },
  );
  return { ids, lastPosition };
}

/** Reads an evaluation once the query side has applied `minPosition` (read your writes). */
export async function getEvaluation(
  query: EvaluationQueryServiceClient,
  evalId: string,
  minPosition?: bigint,
): Promise<Evaluation> {
  const { evaluation } = await unary(
    query,
    query.getEvaluation,
    {
      evalId,
      ...(minPosition !== undefined ? { minPosition: minPosition.toString() } : {}),
    },
    SETUP_DEADLINE_MS,
  );
  if (evaluation === undefined) throw new Error(`GetEvaluation(${evalId}) returned no evaluation`);
  return evaluation;
}

/** Every evaluation as the query service returns it, once it has applied `minPosition`. */
export async function evaluationsFromQuery(
  query: EvaluationQueryServiceClient,
  ids: readonly string[],
  minPosition: bigint,
): Promise<Evaluation[]> {
  const evaluations: Evaluation[] = [];
  await forEachConcurrently(ids, 16, async (id) => void evaluations.push(await getEvaluation(query, id, minPosition)));
  return evaluations;
}
