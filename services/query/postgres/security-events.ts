import type { Pool } from 'pg';
import { preparedStatement, queryAs } from '../../../shared/postgres';
import type { SecurityEventFilter, SecurityEventRow, SecurityEvents } from '../handlers/list-security-events';
import { readOrUnavailable } from './event-log';

/**
 * A page of both security tables, newest first by their events' positions (unique across both;
 * bigint, which pg hands over as decimal strings),
 * each side limited and ordered by its own indexes before the two are merged. $1 kinds wanted
 * ('container_created', 'resource_violation'), $2 violation types (empty: all), $3 eval_id and
 * $4 container_id ('' : any), $5/$6 the occurred_at range, $7 the position to page below
 * (NULL: from the newest), $8 how many.
 */
const PAGE_SQL = `
  (SELECT 'container_created' AS kind, position, revision, eval_id,
          container_id, occurred_at, recorded_at, image, limits,
          NULL::text AS violation_type, NULL::text AS severity, NULL::text AS action_taken, NULL::jsonb AS details
     FROM security_audit
    WHERE 'container_created' = ANY ($1::text[]) AND ($3 = '' OR eval_id = $3) AND ($4 = '' OR container_id = $4)
      AND ($5::timestamptz IS NULL OR occurred_at >= $5) AND ($6::timestamptz IS NULL OR occurred_at < $6)
      AND ($7::bigint IS NULL OR position < $7)
    ORDER BY position DESC LIMIT $8)
  UNION ALL
  (SELECT 'resource_violation', position, revision, eval_id,
          container_id, occurred_at, recorded_at, NULL, NULL,
          violation_type, severity, action_taken, details
     FROM security_events
    WHERE 'resource_violation' = ANY ($1::text[]) AND (cardinality($2::text[]) = 0 OR violation_type = ANY ($2::text[]))
      AND ($3 = '' OR eval_id = $3) AND ($4 = '' OR container_id = $4)
      AND ($5::timestamptz IS NULL OR occurred_at >= $5) AND ($6::timestamptz IS NULL OR occurred_at < $6)
      AND ($7::bigint IS NULL OR position < $7)
    ORDER BY position DESC LIMIT $8)
  ORDER BY position DESC LIMIT $8`;

/** Security events (`security_audit`, `security_events`) through the read-only connection. */
export function createPostgresSecurityEvents(pool: Pool): SecurityEvents {
  return {
    page: (tenant: string, filter: SecurityEventFilter, beforePosition: string | undefined, limit: number) =>
      readOrUnavailable('listing security events', async () => {
        const { rows } = await queryAs<SecurityEventRow>(
          pool,
          tenant,
          preparedStatement(PAGE_SQL, [
            filter.kinds,
            filter.violationTypes,
            filter.evalId,
            filter.containerId,
            filter.occurredAfter ?? null,
            filter.occurredBefore ?? null,
            beforePosition ?? null,
            limit,
          ]),
        );
        return rows;
      }),
  };
}
