import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { completeRequest, startRequest, submitRequest } from '../support/evaluations';
import { closeAll, createClients, unary } from '../support/grpc';
import { closedLoop, interleave, type LoadTarget } from '../support/load';
import { loadFigures, type Row } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack } from '../support/stack';

const CONCURRENCY = [1, 16, 64];

type Op = (worker: number, iteration: number) => Promise<unknown>;

function submitOp(client: EvaluationCommandServiceClient): Op {
  return (worker, iteration) => unary(client, client.submitEvaluation, submitRequest(worker * 1_000_000 + iteration));
}

/**
 * Each worker drives its own evaluations through submit → start → complete, one command per
 * call (a run ends after any command, leaving a few evaluations queued or running).
 */
function lifecycleOp(client: EvaluationCommandServiceClient, concurrency: number): Op {
  const current: string[] = new Array<string>(concurrency).fill('');
  return async (worker, iteration) => {
    switch (iteration % 3) {
      case 0:
        current[worker] = (
          await unary(client, client.submitEvaluation, submitRequest(worker * 1_000_000 + iteration))
        ).evalId;
        return;
      case 1:
        return unary(client, client.startEvaluation, startRequest(current[worker]!));
      default:
        return unary(client, client.completeEvaluation, completeRequest(current[worker]!));
    }
  };
}

export const commands: Scenario = {
  name: 'commands',
  description:
    'SubmitEvaluation, and whole lifecycles (submit, start, complete), at concurrency 1/16/64 beside a bare grpc-js service running the same SQL with pg',
  async run(ctx) {
    const stack = await createBenchStack(ctx);
    try {
      const service = await stack.start('command');
      const floor = await stack.startFloor('pg-commands');
      const [serviceClient, floorClient] = [
        ...createClients(EvaluationCommandServiceClient, service.address, 1),
        ...createClients(EvaluationCommandServiceClient, floor.address, 1),
      ];
      const rows: Row[] = [];
      const kinds = [
        { name: 'SubmitEvaluation', op: (client: EvaluationCommandServiceClient) => submitOp(client) },
        {
          name: 'lifecycle (submit, start, complete)',
          op: (client: EvaluationCommandServiceClient, c: number) => lifecycleOp(client, c),
        },
      ];
      for (const kind of kinds) {
        for (const concurrency of CONCURRENCY) {
          const target = (name: string, client: EvaluationCommandServiceClient): LoadTarget => ({
            name,
            run: () =>
              closedLoop({
                concurrency,
                warmupMs: ctx.load.warmupMs,
                durationMs: ctx.load.durationMs,
                op: kind.op(client, concurrency),
              }),
          });
          const results = await interleave(
            [target('command service', serviceClient!), target('bare grpc-js + pg, same SQL', floorClient!)],
            ctx.load.rounds,
            (name, round) =>
              ctx.progress(`commands: ${kind.name} c=${concurrency} round ${round + 1}/${ctx.load.rounds}: ${name}`),
          );
          const subject = results.get('command service')!;
          const bare = results.get('bare grpc-js + pg, same SQL')!;
          rows.push({
            scenario: kind.name,
            case: `c=${concurrency}`,
            subject: loadFigures('command service', subject, 'cmd/s'),
            floors: [loadFigures('bare grpc-js + pg, same SQL', bare, 'cmd/s')],
            ratio: subject.rate / bare.rate,
          });
        }
      }
      closeAll([serviceClient!, floorClient!]);
      const worst = rows.reduce((a, b) => ((b.ratio ?? Infinity) < (a.ratio ?? Infinity) ? b : a));
      return {
        rows,
        checks: [
          {
            target: 'Commands ≥ 0.7× the bare pg service at every concurrency',
            actual: `lowest ${worst.ratio?.toFixed(3)}× (${worst.scenario}, ${worst.case})`,
            met: rows.every((r) => (r.ratio ?? 0) >= 0.7),
          },
        ],
      };
    } finally {
      await stack.close();
    }
  },
};
