import { Evaluation } from '../../shared/generated/crucible/storage/v1/evaluation';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { redisLookup, seedRedisRecords } from '../floors/redis-lookup';
import { evaluationsFromQuery, seedCompletedEvaluations } from '../support/evaluations';
import { closeAll, createClients, unary } from '../support/grpc';
import { closedLoop, interleave, type LoadResult, type LoadTarget } from '../support/load';
import { loadFigures, type Check, type Row } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack } from '../support/stack';

const CONCURRENCY = [1, 16, 64];

export const getEvaluation: Scenario = {
  name: 'get-evaluation',
  description:
    'GetEvaluation at concurrency 1/16/64 beside a bare grpc-js service answering from memory, raw ioredis HGETALL, and a naive service reading PostgreSQL by primary key',
  async run(ctx) {
    const stack = await createBenchStack(ctx);
    try {
      const command = await stack.start('command');
      const query = await stack.start('query');
      const [commandClient] = createClients(EvaluationCommandServiceClient, command.address, 1);
      const count = ctx.smoke ? 20 : 1000;
      ctx.progress(`get-evaluation: recording ${count} evaluations (submit, start, complete)`);
      const { ids, lastPosition } = await seedCompletedEvaluations(commandClient!, count);
      const [queryClient] = createClients(EvaluationQueryServiceClient, query.address, 1);
      const evaluations = await evaluationsFromQuery(queryClient!, ids, lastPosition);

      const memory = await stack.startFloor('memory-server', {
        FLOOR_EVALUATION: JSON.stringify(Evaluation.toJSON(evaluations[0]!)),
      });
      const naive = await stack.startFloor('pg-lookup');
      const floorPrefix = `${stack.environment.config.redisKeyPrefix}-floor:`;
      await seedRedisRecords(stack.redis, floorPrefix, evaluations);
      const [memoryClient] = createClients(EvaluationQueryServiceClient, memory.address, 1);
      const [naiveClient] = createClients(EvaluationQueryServiceClient, naive.address, 1);

      // Every worker walks the ids in its own order, so that concurrent calls read different records.
      const idOf = (worker: number, iteration: number): string => ids[(worker * 7919 + iteration) % ids.length]!;
      const viaGrpc = (client: EvaluationQueryServiceClient) => (worker: number, iteration: number) =>
        unary(client, client.getEvaluation, { evalId: idOf(worker, iteration) });
      const rows: Row[] = [];
      const byConcurrency = new Map<number, Map<string, LoadResult>>();
      for (const concurrency of CONCURRENCY) {
        const target = (name: string, op: (worker: number, iteration: number) => Promise<unknown>): LoadTarget => ({
          name,
          run: () => closedLoop({ concurrency, warmupMs: ctx.load.warmupMs, durationMs: ctx.load.durationMs, op }),
        });
        const results = await interleave(
          [
            target('query service', viaGrpc(queryClient!)),
            target('bare grpc-js, from memory', viaGrpc(memoryClient!)),
            target('ioredis HGETALL', (w, i) => redisLookup(stack.redis, floorPrefix, idOf(w, i))),
            target('naive service, PostgreSQL by key', viaGrpc(naiveClient!)),
          ],
          ctx.load.rounds,
          (name, round) =>
            ctx.progress(`get-evaluation: c=${concurrency} round ${round + 1}/${ctx.load.rounds}: ${name}`),
        );
        byConcurrency.set(concurrency, results);
        const get = (name: string): LoadResult => results.get(name)!;
        const bare = get('bare grpc-js, from memory');
        rows.push({
          scenario: 'GetEvaluation',
          case: `c=${concurrency}`,
          subject: loadFigures('query service', get('query service'), 'req/s'),
          floors: [
            loadFigures('bare grpc-js, from memory', bare, 'req/s'),
            loadFigures('ioredis HGETALL', get('ioredis HGETALL'), 'req/s'),
          ],
          ratio: get('query service').rate / bare.rate,
        });
        rows.push({
          scenario: 'GetEvaluation, naive PostgreSQL service (the alternative)',
          case: `c=${concurrency}`,
          subject: loadFigures('naive service, PostgreSQL by key', get('naive service, PostgreSQL by key'), 'req/s'),
          floors: [loadFigures('bare grpc-js, from memory', bare, 'req/s')],
          ratio: get('naive service, PostgreSQL by key').rate / bare.rate,
        });
      }
      closeAll([commandClient!, queryClient!, memoryClient!, naiveClient!]);

      const at = (c: number, name: string): LoadResult => byConcurrency.get(c)!.get(name)!;
      const throughput = at(64, 'query service').rate / at(64, 'bare grpc-js, from memory').rate;
      const p50Gap = at(1, 'query service').latency.p50Ms - at(1, 'bare grpc-js, from memory').latency.p50Ms;
      const checks: Check[] = [
        {
          target: 'GetEvaluation throughput at c=64 ≥ 0.8× the bare unary service',
          actual: `${throughput.toFixed(3)}×`,
          met: throughput >= 0.8,
        },
        {
          target: 'GetEvaluation p50 at c=1 within 0.3 ms of the bare unary service',
          actual: `+${p50Gap.toFixed(3)} ms`,
          met: p50Gap <= 0.3,
        },
      ];
      return { rows, checks };
    } finally {
      await stack.close();
    }
  },
};
