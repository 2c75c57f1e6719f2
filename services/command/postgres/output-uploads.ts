import type { Pool } from 'pg';
import { ALL_TENANTS } from '../../../shared/domain';
import { preparedStatement, queryAs } from '../../../shared/postgres';
import type { UploadRecord, UploadRecords, UploadState } from '../application/direct-uploads';
import { readOrUnavailable } from './evaluation-store';

const COLUMNS = `upload_id, eval_id, s3_upload_id, s3_key, size::text AS size, sha256, part_size::text AS part_size,
                 state, created_at, expires_at`;

interface UploadRow {
  upload_id: string;
  eval_id: string;
  s3_upload_id: string;
  s3_key: string;
  size: string;
  sha256: string;
  part_size: string;
  state: UploadState;
  created_at: Date;
  expires_at: Date;
}

function recordOf(row: UploadRow): UploadRecord {
  return {
    uploadId: row.upload_id,
    evalId: row.eval_id,
    s3UploadId: row.s3_upload_id,
    key: row.s3_key,
    size: Number(row.size),
    sha256: row.sha256,
    partSize: Number(row.part_size),
    state: row.state,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
  };
}

/** `output_uploads`: direct uploads and how they ended. */
export function createPostgresUploadRecords(pool: Pool): UploadRecords {
  return {
    insert: (tenant, r) =>
      readOrUnavailable('recording an upload', async () => {
        await queryAs(pool, tenant, {
          text: `INSERT INTO output_uploads (upload_id, eval_id, s3_upload_id, s3_key, size, sha256, part_size, state,
                                       created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
          values: [
            r.uploadId,
            r.evalId,
            r.s3UploadId,
            r.key,
            r.size,
            r.sha256,
            r.partSize,
            r.state,
            r.createdAt,
            r.expiresAt,
          ],
        });
      }),
    find: (tenant, uploadId) =>
      readOrUnavailable('reading an upload', async () => {
        const { rows } = await queryAs<UploadRow>(
          pool,
          tenant,
          preparedStatement(`SELECT ${COLUMNS} FROM output_uploads WHERE upload_id = $1`, [uploadId]),
        );
        return rows[0] === undefined ? undefined : recordOf(rows[0]);
      }),
    setState: (tenant, uploadId, from, to) =>
      readOrUnavailable('updating an upload', async () => {
        const { rowCount } = await queryAs(pool, tenant, {
          text: `UPDATE output_uploads SET state = $3 WHERE upload_id = $1 AND state = $2`,
          values: [uploadId, from, to],
        });
        return rowCount === 1;
      }),
    expired: (now, limit) =>
      readOrUnavailable('listing expired uploads', async () => {
        const { rows } = await queryAs<UploadRow>(pool, ALL_TENANTS, {
          text: `SELECT ${COLUMNS} FROM output_uploads WHERE state = 'open' AND expires_at < $1 ORDER BY expires_at LIMIT $2`,
          values: [now, limit],
        });
        return rows.map(recordOf);
      }),
  };
}
