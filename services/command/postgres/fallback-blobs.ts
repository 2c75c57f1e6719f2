import type { Pool } from 'pg';
import { ALL_TENANTS, type BodyKind, type LogStream } from '../../../shared/domain';
import { preparedStatement, queryAs, queryInTransaction } from '../../../shared/postgres';
import type { FallbackBlob, FallbackBlobs } from '../application/blob-mover';
import { readOrUnavailable } from './evaluation-store';

// Along the partial indexes on blob_store = 'file' (migration 12). $1 limit.
const LIST_SQL = `
  (SELECT eval_id, tenant_id, kind, NULL::text AS start_offset, s3_key, size::text AS size
     FROM evaluation_bodies WHERE blob_store = 'file' LIMIT $1)
  UNION ALL
  (SELECT eval_id, tenant_id, stream, start_offset::text, s3_key, size::text
     FROM evaluation_log_segments WHERE blob_store = 'file' LIMIT $1)`;

// Still in the fallback store, under the claim. $1 eval_id, $2 kind or stream, $3 offset, $4 key.
const STILL_THERE_SQL = `
  SELECT 1 FROM evaluation_bodies
   WHERE eval_id = $1 AND kind = $2 AND $3::bigint IS NULL AND s3_key = $4 AND blob_store = 'file'
  UNION ALL
  SELECT 1 FROM evaluation_log_segments
   WHERE eval_id = $1 AND stream = $2 AND start_offset = $3::bigint AND s3_key = $4 AND blob_store = 'file'`;

// Along the same partial indexes, each count stopped at $1.
const BACKLOG_SQL = `
  SELECT (SELECT count(*) FROM (SELECT 1 FROM evaluation_bodies WHERE blob_store = 'file' LIMIT $1) AS b)
       + (SELECT count(*) FROM (SELECT 1 FROM evaluation_log_segments WHERE blob_store = 'file' LIMIT $1) AS s)
         AS blobs`;

/** How many blobs wait in the fallback store for the mover, counted up to `limit` of each kind. */
export async function countFallbackBlobs(pool: Pool, limit: number): Promise<number> {
  return readOrUnavailable('counting the fallback store', async () => {
    const { rows } = await queryAs<{ blobs: string }>(pool, ALL_TENANTS, preparedStatement(BACKLOG_SQL, [limit]));
    return Number(rows[0]?.blobs ?? 0);
  });
}

interface ListRow {
  eval_id: string;
  tenant_id: string;
  kind: string;
  start_offset: string | null;
  s3_key: string;
  size: string;
}

/**
 * The rows naming blobs in the fallback store, and the claim every mover takes on one: a
 * session-level advisory lock on the key's hash, held on a session of its own for the whole
 * copy (minutes for a large blob, never inside a transaction), so that of two command service
 * instances one moves the blob and the other skips it.
 */
export function createPostgresFallbackBlobs(pool: Pool): FallbackBlobs {
  return {
    list: (limit) =>
      readOrUnavailable('listing the fallback store', async () => {
        const { rows } = await queryAs<ListRow>(pool, ALL_TENANTS, preparedStatement(LIST_SQL, [limit]));
        return rows.map((row): FallbackBlob => ({
          evalId: row.eval_id,
          tenant: row.tenant_id,
          kind: row.kind as BodyKind | LogStream,
          ...(row.start_offset !== null ? { offset: Number(row.start_offset) } : {}),
          key: row.s3_key,
          size: Number(row.size),
        }));
      }),
    async claim(blob, move) {
      const session = await readOrUnavailable('claiming a blob', () => pool.connect());
      let locked = false;
      try {
        const lock = await readOrUnavailable('claiming a blob', () =>
          session.query<{ locked: boolean }>('SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS locked', [
            blob.key,
          ]),
        );
        locked = lock.rows[0]?.locked === true;
        if (!locked) return 'skipped';
        const still = await readOrUnavailable('claiming a blob', () =>
          queryInTransaction(session, blob.tenant, {
            text: STILL_THERE_SQL,
            values: [blob.evalId, blob.kind, blob.offset ?? null, blob.key],
          }),
        );
        if (still.rowCount === 0) return 'skipped';
        await move();
        return 'moved';
      } finally {
        // A session that cannot unlock is destroyed instead: closing it releases the lock.
        const unlocked =
          !locked ||
          (await session.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [blob.key]).then(
            () => true,
            () => false,
          ));
        session.release(!unlocked);
      }
    },
  };
}
