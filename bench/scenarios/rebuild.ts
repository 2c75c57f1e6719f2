import { join } from 'node:path';
import { Pool } from 'pg';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { rawRebuild } from '../floors/rebuild-raw';
import { createClients, SETUP_DEADLINE_MS, unary } from '../support/grpc';
import { runToCompletion } from '../support/processes';
import { figure, type Measured } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack, deleteKeys, PROJECT_ROOT } from '../support/stack';

/**
 * Writes an event log of `evaluations * 2` events straight into PostgreSQL (generate_series,
 * no service): each evaluation is queued, then started (odd) or completed with a small output
 * kept in PostgreSQL (even), with `evaluations`, `evaluation_bodies` and `event_log_head` to
 * match, as the command service would have left them.
 */
async function generateEventLog(pool: Pool, evaluations: number): Promise<number> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    // Skips the foreign-key triggers for this bulk load (the rows are consistent by
    // construction): it halves the time to write a million events.
    await client.query(`SET LOCAL session_replication_role = replica`);
    await client.query(
      `INSERT INTO evaluations (eval_id, status, code, code_hash, code_size, language, engine, timeout_seconds, metadata,
                                executor_id, container_id, exit_code, output_preview, output_size, output_location,
                                created_at, started_at, completed_at, updated_at, revision)
       SELECT 'bench-' || lpad(i::text, 8, '0'), CASE WHEN i % 2 = 0 THEN 'completed' ELSE 'running' END,
              'print(' || i || ')', encode(sha256(('print(' || i || ')')::bytea), 'hex'), length('print(' || i || ')'),
              'python', 'docker', 60, jsonb_build_object('suite', 'bench', 'task', i % 100),
              'executor-1', 'container-' || i, CASE WHEN i % 2 = 0 THEN 0 END,
              CASE WHEN i % 2 = 0 THEN 'ok'::bytea END, CASE WHEN i % 2 = 0 THEN 2 ELSE 0 END,
              CASE WHEN i % 2 = 0 THEN 'postgres' ELSE '' END,
              t, t + interval '1 second', CASE WHEN i % 2 = 0 THEN t + interval '2 seconds' END,
              t + interval '2 seconds', 2
         FROM generate_series(1, $1::int) AS i, LATERAL (SELECT timestamptz '2026-01-01' + i * interval '1 millisecond' AS t) AS ts`,
      [evaluations],
    );
    await client.query(
      `INSERT INTO evaluation_bodies (eval_id, kind, size, content)
       SELECT 'bench-' || lpad(i::text, 8, '0'), 'output', 2, 'ok'::bytea FROM generate_series(2, $1::int, 2) AS i`,
      [evaluations],
    );
    await client.query(
      `INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, command_hash, recorded_at)
       SELECT 2 * i - 2 + r, 'bench-' || lpad(i::text, 8, '0'), r,
              CASE WHEN r = 1 THEN 'EvaluationQueued' WHEN i % 2 = 0 THEN 'EvaluationCompleted' ELSE 'EvaluationStarted' END,
              CASE WHEN r = 1 THEN jsonb_build_object('codeHash', encode(sha256(('print(' || i || ')')::bytea), 'hex'),
                                                      'codeSize', length('print(' || i || ')'), 'language', 'python',
                                                      'engine', 'docker', 'timeoutSeconds', 60,
                                                      'metadata', jsonb_build_object('suite', 'bench', 'task', i % 100),
                                                      'createdAt', to_json(t)#>>'{}')
                   WHEN i % 2 = 0 THEN jsonb_build_object('exitCode', 0, 'completedAt', to_json(t + interval '2 seconds')#>>'{}',
                                                          'output', jsonb_build_object('previewBase64', 'b2s=', 'size', 2, 'location', 'postgres'))
                   ELSE jsonb_build_object('executorId', 'executor-1', 'containerId', 'container-' || i,
                                           'startedAt', to_json(t + interval '1 second')#>>'{}') END,
              md5(i || ':' || r) || md5(r || ':' || i), t + r * interval '1 second'
         FROM generate_series(1, $1::int) AS i, generate_series(1, 2) AS r,
              LATERAL (SELECT timestamptz '2026-01-01' + i * interval '1 millisecond' AS t) AS ts
        ORDER BY 1`,
      [evaluations],
    );
    await client.query(`UPDATE event_log_head SET position = $1 WHERE id = 1`, [evaluations * 2]);
    await client.query('COMMIT');
    await client.query('ANALYZE evaluations, evaluation_events, evaluation_bodies');
    return evaluations * 2;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
}

const perSecond = (name: string, events: number, seconds: number): Measured => ({
  name,
  figures: [figure('', events / seconds, 'events/s'), figure('in', seconds, 's')],
});

export const rebuild: Scenario = {
  name: 'rebuild',
  description:
    'read models rebuilt from 1,000,000 events by the rebuild CLI, beside a raw read of the event table with pipelined Redis writes',
  async run(ctx) {
    const stack = await createBenchStack(ctx);
    const pool = new Pool({ connectionString: stack.environment.config.databaseUrl, max: 2 });
    try {
      const prefix = stack.environment.config.redisKeyPrefix;
      ctx.progress(`rebuild: writing ${ctx.smoke ? '1,000' : '1,000,000'} events into PostgreSQL`);
      const events = await generateEventLog(pool, ctx.smoke ? 500 : 500_000);

      ctx.progress('rebuild: floor: raw read of the event table + pipelined Redis writes');
      const floor = await rawRebuild(pool, stack.redis, `${prefix}-floor:`);
      if (floor.events !== events) throw new Error(`the floor read ${floor.events} events of ${events}`);
      await deleteKeys(stack.redis, `${prefix}-floor:*`);

      ctx.progress('rebuild: the rebuild CLI (dist/services/query/cli/rebuild.js)');
      const cli = await runToCompletion({
        name: 'rebuild CLI',
        script: join(PROJECT_ROOT, 'dist', 'services', 'query', 'cli', 'rebuild.js'),
        env: stack.env,
        nodeArgs: ctx.serviceNodeArgs,
        owner: ctx.processes,
      });

      // The rebuilt read models must be whole: a query service started on them is caught up at once.
      const query = await stack.start('query');
      const [client] = createClients(EvaluationQueryServiceClient, query.address, 1);
      const { checkpoint } = await unary(client!, client!.getProjectionStatus, {}, SETUP_DEADLINE_MS);
      client!.close();
      if (checkpoint !== String(events))
        throw new Error(`after the rebuild the checkpoint is ${checkpoint}, not ${events}`);

      const floorFigures = perSecond('raw event-table read + pipelined Redis writes', floor.events, floor.seconds);
      const rate = events / cli.seconds;
      return {
        rows: [
          {
            scenario: 'read-model rebuild',
            case: `${events.toLocaleString('en-US')} events`,
            subject: perSecond('rebuild CLI (process start to exit)', events, cli.seconds),
            floors: [floorFigures],
            ratio: rate / (floor.events / floor.seconds),
          },
        ],
        checks: [
          {
            target: 'Rebuild ≥ 50,000 events/s',
            actual: `${Math.round(rate).toLocaleString('en-US')} events/s (CLI, ${events} events)`,
            met: rate >= 50_000,
          },
        ],
      };
    } finally {
      await pool.end();
      await stack.close();
    }
  },
};
