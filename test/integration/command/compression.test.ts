import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { createHarness, type Harness } from './harness';
import { textOutput } from '../../support/text';

describe('bodies kept in PostgreSQL are compressed where it pays', function () {
  this.timeout(60_000);
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });
  after(async () => {
    await h?.close();
  });

  async function stored(evalId: string): Promise<{ method: string | null; storedBytes: number; size: number }> {
    const { rows } = await h.sql.query<{ method: string | null; stored: number; size: string }>(
      `SELECT pg_column_compression(content) AS method, pg_column_size(content) AS stored, size::text
         FROM evaluation_bodies WHERE eval_id = $1 AND kind = 'output'`,
      [evalId],
    );
    return { method: rows[0]?.method ?? null, storedBytes: rows[0]?.stored ?? 0, size: Number(rows[0]?.size) };
  }

  it('stores a text output compressed (lz4) and random bytes as they are; sizes and ranges are of the original', async () => {
    const text = textOutput(900 * 1024);
    const noise = randomBytes(900 * 1024);
    for (const [evalId, output] of [
      ['text-out', text],
      ['noise-out', noise],
    ] as const) {
      await h.commands.submit({ evalId });
      await h.commands.complete({ evalId, output, exitCode: 0 });
    }
    const compressed = await stored('text-out');
    const { rows: settings } = await h.sql.query<{ lz4: boolean }>(
      `SELECT 'lz4' = ANY (enumvals) AS lz4 FROM pg_settings WHERE name = 'default_toast_compression'`,
    );
    expect(compressed.method, 'lz4 where the server has it').to.equal(settings[0]?.lz4 === true ? 'lz4' : 'pglz');
    expect(compressed.size).to.equal(text.length);
    expect(compressed.storedBytes, `text: ${compressed.storedBytes} B stored for ${text.length}`).to.be.below(
      text.length / 3,
    );
    const raw = await stored('noise-out');
    expect(raw.method, 'incompressible bytes are not compressed').to.equal(null);
    expect(raw.storedBytes).to.be.at.least(noise.length);

    // A range of a compressed body reads the original bytes.
    const { rows } = await h.sql.query<{ part: Buffer }>(
      `SELECT substring(content FROM 800001 FOR 64) AS part FROM evaluation_bodies WHERE eval_id = 'text-out' AND kind = 'output'`,
    );
    expect(rows[0]?.part.equals(text.subarray(800_000, 800_064))).to.equal(true);
  });
});
