import type { Pool } from 'pg';
import type { BlobHome } from '../../../shared/domain';
import type { BodyStore } from '../handlers/read-output';
import { queryAs } from '../../../shared/postgres';
import { readOrUnavailable } from './event-log';

/** Body rows (`evaluation_bodies`) through the read-only connection. */
export function createPostgresBodyStore(pool: Pool): BodyStore {
  return {
    find: (tenant, evalId, kind) =>
      readOrUnavailable('reading an output', async () => {
        const { rows } = await queryAs<{
          known: string | null;
          size: string | null;
          inline: boolean | null;
          s3_key: string | null;
          blob_store: BlobHome | null;
        }>(pool, tenant, {
          text: `SELECT e.eval_id AS known, b.size::text AS size, b.content IS NOT NULL AS inline, b.s3_key, b.blob_store
               FROM evaluations e
               LEFT JOIN evaluation_bodies b ON b.eval_id = e.eval_id AND b.kind = $2
              WHERE e.eval_id = $1`,
          values: [evalId, kind],
        });
        const row = rows[0];
        if (row === undefined) return 'unknown-evaluation';
        if (row.size === null) return undefined;
        const size = Number(row.size);
        if (row.inline === true) return { size, location: { kind: 'inline' } };
        return { size, location: { kind: 'blob', home: row.blob_store ?? 's3', key: row.s3_key ?? '' } };
      }),
    readInline: (tenant, evalId, kind, offset, length) =>
      readOrUnavailable('reading an output', async () => {
        // substring() on bytea is 1-based and cheap: only this window leaves the server.
        const { rows } = await queryAs<{ part: Buffer | null }>(pool, tenant, {
          text: `SELECT substring(content FROM $3 FOR $4) AS part FROM evaluation_bodies WHERE eval_id = $1 AND kind = $2`,
          values: [evalId, kind, offset + 1, length],
        });
        return rows[0]?.part ?? Buffer.alloc(0);
      }),
  };
}
