import { join } from 'node:path';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { createKeyLayout } from '../../services/query/read-models/keys';
import { evaluationsFromQuery, seedCompletedEvaluations, submitRequest } from '../support/evaluations';
import { closeAll, createClients, SETUP_DEADLINE_MS, unary } from '../support/grpc';
import { closedLoop, interleave, type LoadResult, type LoadTarget } from '../support/load';
import { runToCompletion } from '../support/processes';
import { figure, loadFigures, type Row } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack, PROJECT_ROOT } from '../support/stack';

const CONCURRENCY = 16;
/** Ended evaluations leave Redis a second after they end, swept every second. */
const HOT = { HOT_RETENTION: '1s', HOT_SWEEP_INTERVAL_SECONDS: '1' };

/**
 * What the tiers below Redis cost a read ("only slower": by how much), and what the retention
 * job costs. GetEvaluation of evaluations that left Redis (folded from PostgreSQL) and of
 * archived ones (folded from their S3 archive, the last 32 kept decoded: a walk over 1,000 ids
 * reads S3 nearly every time), beside the naive service reading PostgreSQL by key; the
 * retention CLI archiving them.
 */
export const retention: Scenario = {
  name: 'retention',
  description:
    'GetEvaluation of evaluations past HOT_RETENTION (PostgreSQL) and archived (S3) beside a naive PostgreSQL-by-key service; the retention job',
  async run(ctx) {
    const stack = await createBenchStack(ctx, HOT);
    try {
      const command = await stack.start('command');
      const query = await stack.start('query');
      const naive = await stack.startFloor('pg-lookup');
      const [commandClient] = createClients(EvaluationCommandServiceClient, command.address, 1);
      const [queryClient] = createClients(EvaluationQueryServiceClient, query.address, 1);
      const [naiveClient] = createClients(EvaluationQueryServiceClient, naive.address, 1);
      const count = ctx.smoke ? 20 : 1000;
      ctx.progress(`retention: recording ${count} evaluations (submit, start, complete)`);
      const { ids, lastPosition } = await seedCompletedEvaluations(commandClient!, count);
      await evaluationsFromQuery(queryClient!, ids.slice(0, 1), lastPosition);
      // Submitted after them: the horizon stops below it, and the archived events all go.
      await unary(commandClient!, commandClient!.submitEvaluation, submitRequest(count), SETUP_DEADLINE_MS);

      const config = stack.environment.config;
      const layout = createKeyLayout(config.redisKeyPrefix, config.readModelPartitions);
      ctx.progress('retention: waiting for the HOT_RETENTION sweep to take them out of Redis');
      const deadline = Date.now() + 120_000;
      const keys = ids.map((id) => layout.record(layout.partitionOf(id), id));
      while ((await stack.redis.exists(...keys)) > 0) {
        if (Date.now() > deadline) throw new Error('the sweep never took the evaluations out of Redis');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }

      const idOf = (worker: number, iteration: number): string => ids[(worker * 7919 + iteration) % ids.length]!;
      const viaGrpc = (client: EvaluationQueryServiceClient) => (worker: number, iteration: number) =>
        unary(client, client.getEvaluation, { evalId: idOf(worker, iteration) });
      const target = (name: string, client: EvaluationQueryServiceClient): LoadTarget => ({
        name,
        run: () =>
          closedLoop({
            concurrency: CONCURRENCY,
            warmupMs: ctx.load.warmupMs,
            durationMs: ctx.load.durationMs,
            op: viaGrpc(client),
          }),
      });
      const measure = (subject: string): Promise<Map<string, LoadResult>> =>
        interleave(
          [target(subject, queryClient!), target('naive service, PostgreSQL by key', naiveClient!)],
          ctx.load.rounds,
          (name, round) => ctx.progress(`retention: round ${round + 1}/${ctx.load.rounds}: ${name}`),
        );
      const warm = await measure('left Redis: folded from PostgreSQL');

      ctx.progress('retention: the retention CLI archives them (--early --as-of 100 days on)');
      const asOf = new Date(Date.now() + 100 * 86_400_000).toISOString();
      const cli = await runToCompletion({
        name: 'retention CLI',
        script: join(PROJECT_ROOT, 'dist', 'services', 'command', 'cli', 'retention.js'),
        args: ['--early', '--as-of', asOf],
        env: stack.env,
        nodeArgs: ctx.serviceNodeArgs,
        owner: ctx.processes,
      });
      // Its report: the last line that is one (warnings may follow on stderr).
      const reportLine = cli.tail
        .split('\n')
        .reverse()
        .find((line) => line.startsWith('{"runId"'));
      const report = JSON.parse(reportLine ?? '{}') as {
        archived?: number;
        archiveBytes?: number;
        eventsDeleted?: number;
      };
      if (report.archived !== count) throw new Error(`the retention CLI archived ${report.archived} of ${count}`);

      const cold = await measure('archived: folded from its S3 archive');
      closeAll([commandClient!, queryClient!, naiveClient!]);

      const naiveOf = (results: Map<string, LoadResult>): LoadResult =>
        results.get('naive service, PostgreSQL by key')!;
      const rowOf = (results: Map<string, LoadResult>, subject: string): Row => ({
        scenario: 'GetEvaluation of what left Redis',
        case: `c=${CONCURRENCY}, ${count} evaluations`,
        subject: loadFigures(subject, results.get(subject)!, 'req/s'),
        floors: [loadFigures('naive service, PostgreSQL by key', naiveOf(results), 'req/s')],
        ratio: results.get(subject)!.rate / naiveOf(results).rate,
      });
      const rate = count / cli.seconds;
      return {
        rows: [
          rowOf(warm, 'left Redis: folded from PostgreSQL'),
          rowOf(cold, 'archived: folded from its S3 archive'),
          {
            scenario: 'retention job (CLI, process start included)',
            case: `${count} evaluations, ${report.eventsDeleted ?? 0} events deleted`,
            subject: {
              name: 'npm run retention',
              figures: [figure('', rate, 'evaluations/s'), figure('took', cli.seconds, 's')],
            },
            floors: [],
          },
        ],
        checks: [],
        notes: [
          'No target: the issue asks that reads of what left Redis or PostgreSQL answer the same, only slower; these rows say how much slower.',
          "The retention job has no floor: a loop of 1,000 plain PutObjects against the bench's s3rver failed (InternalError) after the reads, so the job's rate stands alone (one evaluation at a time: read, gzip, PutObject, one transaction).",
        ],
      };
    } finally {
      await stack.close();
    }
  },
};
