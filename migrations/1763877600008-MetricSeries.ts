import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Metrics as RecordMetrics stores them: every point of a call written with the call's event
 * (its revision beside it), a step and the time it was measured as well as the time it was
 * recorded (no writer existed before: the table is empty, so the new columns need no default), and the evaluation's metric names on its row (a call that would add one too many is
 * refused: each name has a summary in the read model). GetEvaluationMetrics reads a metric's
 * series in (name, step, measured_at) order, points without a step first: the index serves that
 * order and its keyset pages.
 */
export class MetricSeries1763877600008 implements MigrationInterface {
  name = 'MetricSeries1763877600008';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE evaluation_events DROP CONSTRAINT evaluation_events_event_type_check,
        ADD CONSTRAINT evaluation_events_event_type_check CHECK (event_type IN ('EvaluationQueued',
          'EvaluationStarted', 'EvaluationCompleted', 'EvaluationFailed', 'EvaluationCancelled',
          'EvaluationMetricsRecorded'))`);
    await q.query(`ALTER TABLE evaluations ADD COLUMN metric_names text[] NOT NULL DEFAULT '{}'`);
    await q.query(`
      ALTER TABLE evaluation_metrics
        ADD COLUMN revision bigint NOT NULL CHECK (revision >= 1),
        ADD COLUMN step bigint CHECK (step >= 0),
        ADD COLUMN measured_at timestamptz NOT NULL`);
    await q.query(`DROP INDEX evaluation_metrics_eval_idx`);
    await q.query(`
      CREATE INDEX evaluation_metrics_series_idx
        ON evaluation_metrics (eval_id, metric_name, (COALESCE(step, -1)), measured_at, id)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX evaluation_metrics_series_idx`);
    await q.query(`
      ALTER TABLE evaluation_metrics
        DROP COLUMN revision, DROP COLUMN step, DROP COLUMN measured_at`);
    await q.query(`CREATE INDEX evaluation_metrics_eval_idx ON evaluation_metrics (eval_id, metric_name, recorded_at)`);
    await q.query(`ALTER TABLE evaluations DROP COLUMN metric_names`);
    await q.query(`
      ALTER TABLE evaluation_events DROP CONSTRAINT evaluation_events_event_type_check,
        ADD CONSTRAINT evaluation_events_event_type_check CHECK (event_type IN ('EvaluationQueued',
          'EvaluationStarted', 'EvaluationCompleted', 'EvaluationFailed', 'EvaluationCancelled'))`);
  }
}
