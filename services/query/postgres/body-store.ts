import type { Pool } from 'pg';
import type { BlobHome } from '../../../shared/domain';
import type { ArchiveReader } from '../archive/archive-reader';
import { archiveLocationOf } from '../archive/retired-evaluations';
import type { BodyKind, BodyStore } from '../handlers/read-output';
import { queryAs } from '../../../shared/postgres';
import { readOrUnavailable } from './event-log';

/** The archive of an evaluation, when it has one (archived_evaluations). */
interface ArchiveColumns {
  archive_key: string | null;
  sha256: string | null;
}

/**
 * Body rows (`evaluation_bodies`) through the read-only connection. The inline bodies of an
 * archived evaluation left the table for its archive, and are read from there; those in S3
 * stay where they were, their rows too.
 */
export function createPostgresBodyStore(pool: Pool, archives: ArchiveReader): BodyStore {
  async function archivedBody(row: ArchiveColumns, kind: BodyKind): Promise<Buffer | undefined> {
    const archive = archiveLocationOf(row);
    if (archive === undefined) return undefined;
    const { bodies } = await archives.read(archive.key, archive.sha256);
    return bodies.find((body) => body.kind === kind)?.content;
  }

  return {
    find: (tenant, evalId, kind) =>
      readOrUnavailable('reading an output', async () => {
        const { rows } = await queryAs<
          {
            known: string | null;
            size: string | null;
            inline: boolean | null;
            s3_key: string | null;
            blob_store: BlobHome | null;
          } & ArchiveColumns
        >(pool, tenant, {
          text: `SELECT e.eval_id AS known, b.size::text AS size, b.content IS NOT NULL AS inline, b.s3_key, b.blob_store,
                        a.archive_key, a.sha256
               FROM evaluations e
               LEFT JOIN evaluation_bodies b ON b.eval_id = e.eval_id AND b.kind = $2
               LEFT JOIN archived_evaluations a ON a.eval_id = e.eval_id
              WHERE e.eval_id = $1`,
          values: [evalId, kind],
        });
        const row = rows[0];
        if (row === undefined) return 'unknown-evaluation';
        if (row.size === null) {
          const archived = await archivedBody(row, kind);
          return archived === undefined ? undefined : { size: archived.length, location: { kind: 'inline' } };
        }
        const size = Number(row.size);
        if (row.inline === true) return { size, location: { kind: 'inline' } };
        return { size, location: { kind: 'blob', home: row.blob_store ?? 's3', key: row.s3_key ?? '' } };
      }),
    readInline: (tenant, evalId, kind, offset, length) =>
      readOrUnavailable('reading an output', async () => {
        // substring() on bytea is 1-based and cheap: only this window leaves the server.
        const { rows } = await queryAs<{ part: Buffer | null } & ArchiveColumns>(pool, tenant, {
          text: `SELECT substring(b.content FROM $3 FOR $4) AS part, a.archive_key, a.sha256
                   FROM evaluations e
                   LEFT JOIN evaluation_bodies b ON b.eval_id = e.eval_id AND b.kind = $2
                   LEFT JOIN archived_evaluations a ON a.eval_id = e.eval_id
                  WHERE e.eval_id = $1`,
          values: [evalId, kind, offset + 1, length],
        });
        const row = rows[0];
        if (row === undefined) return Buffer.alloc(0);
        if (row.part !== null) return row.part;
        return (await archivedBody(row, kind))?.subarray(offset, offset + length) ?? Buffer.alloc(0);
      }),
  };
}
