import type { MigrationInterface, QueryRunner } from 'typeorm';

const COLUMNS = [
  ['evaluation_bodies', 'content'],
  ['evaluation_log_segments', 'content'],
] as const;

/**
 * Bytes kept in PostgreSQL (code, small outputs and errors, log segments) are compressed by
 * TOAST whenever a value is over ~2 KB and compression pays (incompressible bytes stay as they
 * are): transparent to every reader, sizes and digests of the original bytes. lz4 instead of the
 * default pglz: several times faster both ways for about the same ratio on text, and a
 * substring() (a range read) decompresses only up to the range's end. New rows only; a
 * PostgreSQL built without lz4 keeps pglz.
 */
export class Lz4Bodies1763877600014 implements MigrationInterface {
  name = 'Lz4Bodies1763877600014';

  async up(q: QueryRunner): Promise<void> {
    const rows = (await q.query(
      `SELECT 'lz4' = ANY (enumvals) AS lz4 FROM pg_settings WHERE name = 'default_toast_compression'`,
    )) as { lz4: boolean }[];
    if (rows[0]?.lz4 !== true) return;
    for (const [table, column] of COLUMNS) {
      await q.query(`ALTER TABLE ${table} ALTER COLUMN ${column} SET COMPRESSION lz4`);
    }
  }

  async down(q: QueryRunner): Promise<void> {
    for (const [table, column] of COLUMNS) {
      await q.query(`ALTER TABLE ${table} ALTER COLUMN ${column} SET COMPRESSION default`);
    }
  }
}
