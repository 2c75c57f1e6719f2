import type { Pool } from 'pg';
import { preparedStatement, queryAs } from '../../../shared/postgres';
import type { ArchivedMetric } from '../../../shared/archive';
import type { ArchiveReader } from '../archive/archive-reader';
import { archiveLocationOf } from '../archive/retired-evaluations';
import type { MetricSeries, MetricSeriesPage, SeriesCursor, SeriesFilter } from '../handlers/get-evaluation-metrics';
import { readOrUnavailable } from './event-log';

/**
 * A page of one evaluation's points in series order, and whether the evaluation exists, in one
 * statement: the evaluation's row, joined to at most $8 points after the cursor. No row at all:
 * no such evaluation; one row of NULLs: no (more) points. The order is the index's
 * (evaluation_metrics_series_idx), so a page reads only its own entries.
 * $1 eval_id, $2 names (empty: all), $3 after_step, $4-$7 the cursor (NULL: from the start).
 */
const PAGE_SQL = `
  SELECT m.id::text AS id, m.metric_name, m.metric_value, m.unit, m.step::text AS step,
         m.measured_at, m.revision::text AS revision, a.archive_key, a.sha256
    FROM evaluations e
    LEFT JOIN archived_evaluations a ON a.eval_id = e.eval_id
    LEFT JOIN LATERAL (
      SELECT * FROM evaluation_metrics m
       WHERE m.eval_id = e.eval_id
         AND (cardinality($2::text[]) = 0 OR m.metric_name = ANY ($2::text[]))
         AND ($3::bigint IS NULL OR m.step > $3::bigint)
         AND ($4::text IS NULL
              OR (m.metric_name, COALESCE(m.step, -1), m.measured_at, m.id)
                 > ($4::text, $5::bigint, $6::timestamptz, $7::bigint))
       ORDER BY m.metric_name, COALESCE(m.step, -1), m.measured_at, m.id
       LIMIT $8) m ON true
   WHERE e.eval_id = $1`;

interface PageRow {
  id: string | null;
  metric_name: string;
  metric_value: number;
  unit: string;
  step: string | null;
  measured_at: Date;
  revision: string;
  /** Set when the evaluation is archived: its points are the archive's. */
  archive_key: string | null;
  sha256: string | null;
}

/**
 * A page of an archived evaluation's points: the archive holds them in series order (as
 * PostgreSQL sorted them, its collation included), so a page starts after the point the cursor
 * names (ids are unique).
 */
export function archivedSeriesPage(
  points: readonly ArchivedMetric[],
  filter: SeriesFilter,
  after: SeriesCursor | undefined,
  limit: number,
): MetricSeriesPage {
  const start = after === undefined ? 0 : points.findIndex((p) => p.id === after.id) + 1;
  const page: MetricSeriesPage = [];
  for (const point of points.slice(start)) {
    if (page.length >= limit) break;
    if (filter.names.length > 0 && !filter.names.includes(point.name)) continue;
    if (filter.afterStep !== undefined && (point.step === undefined || BigInt(point.step) <= BigInt(filter.afterStep)))
      continue;
    // An archived point is a stored point with its recording time besides.
    page.push(point);
  }
  return page;
}

/** Metric points (`evaluation_metrics`, or the archive) through the read-only connection. */
export function createPostgresMetricSeries(pool: Pool, archives: ArchiveReader): MetricSeries {
  return {
    page: (tenant, evalId, filter, after, limit) =>
      readOrUnavailable('reading metrics', async (): Promise<MetricSeriesPage | 'unknown-evaluation'> => {
        const { rows } = await queryAs<PageRow>(
          pool,
          tenant,
          preparedStatement(PAGE_SQL, [
            evalId,
            filter.names,
            filter.afterStep ?? null,
            after?.name ?? null,
            after?.stepKey ?? null,
            after?.measuredAt ?? null,
            after?.id ?? null,
            limit,
          ]),
        );
        if (rows.length === 0) return 'unknown-evaluation';
        const archive = rows[0] === undefined ? undefined : archiveLocationOf(rows[0]);
        if (archive !== undefined)
          return archivedSeriesPage((await archives.read(archive.key, archive.sha256)).metrics, filter, after, limit);
        const points: MetricSeriesPage = [];
        for (const row of rows) {
          if (row.id === null) continue;
          points.push({
            id: row.id,
            name: row.metric_name,
            value: row.metric_value,
            unit: row.unit,
            ...(row.step !== null ? { step: row.step } : {}),
            measuredAt: row.measured_at,
            revision: row.revision,
          });
        }
        return points;
      }),
  };
}

export type { SeriesCursor };
