import { Pool } from 'pg';
import {
  EvaluationCommandServiceClient,
  type MetricPoint,
} from '../../shared/generated/crucible/storage/v1/command_service';
import { startRequest, submitRequest } from '../support/evaluations';
import { closeAll, createClients, unary } from '../support/grpc';
import { closedLoop, interleave, type LoadTarget } from '../support/load';
import { loadFigures, type Row } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack } from '../support/stack';

const CONCURRENCY = [1, 4];
const POINTS_PER_CALL = 1000;
const NAMES = Array.from({ length: 10 }, (_, i) => `eval/metric_${i}`);

/**
 * A call's points: ten metrics, a hundred steps each, the steps moving on with every call (a
 * call identical to the one before would be answered as its repeat, writing nothing).
 */
function batch(iteration: number): MetricPoint[] {
  const at = new Date();
  return Array.from({ length: POINTS_PER_CALL }, (_, i) => ({
    name: NAMES[i % NAMES.length]!,
    value: Math.sin(iteration * POINTS_PER_CALL + i),
    unit: 's',
    step: String(iteration * 100 + Math.floor(i / NAMES.length)),
    timestamp: at,
  }));
}

/** The same points as one multi-row INSERT, the way a hand-written writer would store them. */
async function bareInsert(pool: Pool, evalId: string, iteration: number): Promise<void> {
  const values: unknown[] = [];
  const rows = batch(iteration).map((p) => {
    const n = values.push(evalId, p.name, p.value, p.unit, p.step, p.timestamp);
    return `($${n - 5}, 1, $${n - 4}, $${n - 3}, $${n - 2}, $${n - 1}, $${n}, now())`;
  });
  await pool.query(
    `INSERT INTO evaluation_metrics (eval_id, revision, metric_name, metric_value, unit, step, measured_at, recorded_at)
     VALUES ${rows.join(', ')}`,
    values,
  );
}

export const metrics: Scenario = {
  name: 'metrics',
  description: `RecordMetrics of ${POINTS_PER_CALL} points at concurrency ${CONCURRENCY.join('/')} beside a bare pg multi-row INSERT of the same points from the bench process`,
  async run(ctx) {
    const stack = await createBenchStack(ctx);
    const pool = new Pool({ connectionString: stack.environment.config.databaseUrl, max: Math.max(...CONCURRENCY) });
    try {
      const command = await stack.start('command');
      const [client] = createClients(EvaluationCommandServiceClient, command.address, 1);
      // One running evaluation per worker: calls on one evaluation would take turns on its row.
      const evaluations: string[] = [];
      for (let worker = 0; worker < Math.max(...CONCURRENCY); worker += 1) {
        const { evalId } = await unary(client!, client!.submitEvaluation, submitRequest(worker));
        await unary(client!, client!.startEvaluation, startRequest(evalId));
        evaluations.push(evalId);
      }
      let calls = 0;
      const rows: Row[] = [];
      for (const concurrency of CONCURRENCY) {
        const target = (name: string, op: (worker: number, iteration: number) => Promise<unknown>): LoadTarget => ({
          name,
          run: () => closedLoop({ concurrency, warmupMs: ctx.load.warmupMs, durationMs: ctx.load.durationMs, op }),
        });
        const results = await interleave(
          [
            target('command service', (worker) =>
              unary(client!, client!.recordMetrics, {
                evalId: evaluations[worker]!,
                metrics: batch((calls += 1)),
                requestId: '',
              }),
            ),
            target('bare pg multi-row INSERT', (worker) => bareInsert(pool, evaluations[worker]!, (calls += 1))),
          ],
          ctx.load.rounds,
          (name, round) => ctx.progress(`metrics: c=${concurrency} round ${round + 1}/${ctx.load.rounds}: ${name}`),
        );
        const service = results.get('command service')!;
        const bare = results.get('bare pg multi-row INSERT')!;
        rows.push({
          scenario: `RecordMetrics, ${POINTS_PER_CALL} points per call`,
          case: `c=${concurrency}`,
          subject: loadFigures('command service', service, 'calls/s'),
          floors: [loadFigures('bare pg multi-row INSERT', bare, 'calls/s')],
          ratio: service.rate / bare.rate,
        });
      }
      closeAll([client!]);
      const worst = rows.reduce((a, b) => ((b.ratio ?? Infinity) < (a.ratio ?? Infinity) ? b : a));
      return {
        rows,
        checks: [
          {
            target: `RecordMetrics of ${POINTS_PER_CALL} points ≥ 0.5× a bare pg multi-row INSERT of the same points`,
            actual: `lowest ${worst.ratio?.toFixed(3)}× (${worst.case})`,
            met: rows.every((r) => (r.ratio ?? 0) >= 0.5),
          },
        ],
        notes: [
          `Metrics: the service's call is gRPC, validation, one load and one statement (the event, the evaluation's row and every point, unnested from five arrays); the floor is only the INSERT of the points, sent by the bench process over its own pool.`,
        ],
      };
    } finally {
      await pool.end();
      await stack.close();
    }
  },
};
