import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Numeric measurements reported for an evaluation (time series per metric name). */
export class CreateEvaluationMetrics1763877600003 implements MigrationInterface {
  name = 'CreateEvaluationMetrics1763877600003';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE evaluation_metrics (
        id            bigserial PRIMARY KEY,
        eval_id       text NOT NULL REFERENCES evaluations (eval_id),
        metric_name   text NOT NULL,
        metric_value  double precision NOT NULL,
        unit          text NOT NULL DEFAULT '',
        labels        jsonb NOT NULL DEFAULT '{}',
        recorded_at   timestamptz NOT NULL
      )`);
    await q.query(`CREATE INDEX evaluation_metrics_eval_idx ON evaluation_metrics (eval_id, metric_name, recorded_at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE evaluation_metrics`);
  }
}
