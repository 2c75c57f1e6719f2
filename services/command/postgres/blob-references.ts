import type { Pool } from 'pg';
import { ALL_TENANTS } from '../../../shared/domain';
import { preparedStatement, queryAs } from '../../../shared/postgres';
import type { BlobReferences } from '../application/orphan-sweeper';
import { readOrUnavailable } from './evaluation-store';

// Along the partial key indexes of migration 12. $1 keys, $2 store.
const REFERENCED_SQL = `
  SELECT s3_key FROM evaluation_bodies WHERE s3_key = ANY ($1::text[]) AND blob_store = $2
  UNION
  SELECT s3_key FROM evaluation_log_segments WHERE s3_key = ANY ($1::text[]) AND blob_store = $2`;

/** Which keys body and log segment rows name, in each store. */
export function createPostgresBlobReferences(pool: Pool): BlobReferences {
  return {
    referenced: (home, keys) =>
      readOrUnavailable('looking up blob references', async () => {
        // Every tenant's rows: a key another tenant's row names is referenced all the same.
        const { rows } = await queryAs<{ s3_key: string }>(
          pool,
          ALL_TENANTS,
          preparedStatement(REFERENCED_SQL, [keys, home]),
        );
        return new Set(rows.map((row) => row.s3_key));
      }),
  };
}
