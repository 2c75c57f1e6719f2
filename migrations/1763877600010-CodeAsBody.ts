import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The submitted code becomes a body like the output and the error: a row of
 * `evaluation_bodies` (kind `code`), its bytes there up to CODE_INLINE_MAX_BYTES, in S3 above
 * with the key there, so that it is read back, by range, or by presigned URL, as they are.
 * Existing code moves into the table, byte for byte (UTF-8, as it was submitted), and
 * `evaluations.code` goes: one home for it, and state rows no longer carry up to a MiB of text
 * on every update. The move is one statement: on a large table it holds its locks for a while,
 * so it belongs in a maintenance window (docs/operations.md would say so once it exists).
 */
export class CodeAsBody1763877600010 implements MigrationInterface {
  name = 'CodeAsBody1763877600010';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE evaluation_bodies DROP CONSTRAINT evaluation_bodies_kind_check,
        ADD CONSTRAINT evaluation_bodies_kind_check CHECK (kind IN ('code', 'output', 'error'))`);
    await q.query(`
      INSERT INTO evaluation_bodies (eval_id, kind, size, content, s3_key)
      SELECT eval_id, 'code', octet_length(convert_to(code, 'UTF8')), convert_to(code, 'UTF8'), NULL
        FROM evaluations
       WHERE code <> ''`);
    await q.query(`ALTER TABLE evaluations DROP COLUMN code`);
  }

  async down(q: QueryRunner): Promise<void> {
    // Code kept in S3 cannot come back into a column without downloading it: refuse rather
    // than leave evaluations whose code is lost.
    const rows = (await q.query(
      `SELECT count(*)::int AS n FROM evaluation_bodies WHERE kind = 'code' AND s3_key IS NOT NULL`,
    )) as { n: number }[];
    if ((rows[0]?.n ?? 0) > 0) {
      throw new Error('cannot revert: some code is stored in S3 (larger than CODE_INLINE_MAX_BYTES)');
    }
    await q.query(`ALTER TABLE evaluations ADD COLUMN code text NOT NULL DEFAULT ''`);
    await q.query(`
      UPDATE evaluations e SET code = convert_from(b.content, 'UTF8')
        FROM evaluation_bodies b
       WHERE b.eval_id = e.eval_id AND b.kind = 'code'`);
    await q.query(`ALTER TABLE evaluations ALTER COLUMN code DROP DEFAULT`);
    await q.query(`DELETE FROM evaluation_bodies WHERE kind = 'code'`);
    await q.query(`
      ALTER TABLE evaluation_bodies DROP CONSTRAINT evaluation_bodies_kind_check,
        ADD CONSTRAINT evaluation_bodies_kind_check CHECK (kind IN ('output', 'error'))`);
  }
}
