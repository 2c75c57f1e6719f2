import { expect } from 'chai';
import { Client } from 'pg';
import { DataSource } from 'typeorm';
import { MIGRATIONS } from '../../../migrations';
import { CodeAsBody1763877600010 } from '../../../migrations/1763877600010-CodeAsBody';
import { loadConfig } from '../../../shared/config';
import { runMigrations } from '../../../shared/postgres';

/**
 * A database of the spec's own on the test server, created before its tests and dropped after:
 * migrations are tried on it from nothing.
 */
function scratchDatabase(prefix: string): { readonly url: string } {
  const base = loadConfig({ ...process.env, ENVIRONMENT: 'test' });
  const database = `${prefix}_${Date.now().toString(36)}_${process.pid}`;
  const adminUrl = new URL(base.databaseUrl);
  adminUrl.pathname = '/postgres';
  const url = new URL(base.databaseUrl);
  url.pathname = `/${database}`;
  const admin = async (sql: string): Promise<void> => {
    const client = new Client({ connectionString: adminUrl.toString() });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  before(() => admin(`CREATE DATABASE ${database}`));
  after(() => admin(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`));
  return { url: url.toString() };
}

/**
 * Two instances of the command service starting at once on a fresh database both run the
 * migrations: the migration lock makes one apply them and the other find them applied,
 * instead of both creating the same tables (one of them failing its start-up).
 */
describe('migrations', function () {
  this.timeout(60_000);
  const { url } = scratchDatabase('crucible_m');

  it('applies each migration once when several instances start together on a fresh database', async () => {
    const runs = await Promise.all([1, 2, 3].map((i) => runMigrations({ url, applicationName: `crucible-m-${i}` })));
    const applied = runs.flat();
    expect(applied.sort()).to.deep.equal(MIGRATIONS.map((m) => new m().name).sort());
    expect(
      runs.filter((r) => r.length > 0),
      'one instance applied them all',
    ).to.have.length(1);

    const client = new Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query<{ name: string }>('SELECT name FROM migrations ORDER BY id');
      expect(rows.map((r) => r.name)).to.deep.equal(MIGRATIONS.map((m) => new m().name));
    } finally {
      await client.end();
    }
    // Run again: nothing to do.
    expect(await runMigrations({ url, applicationName: 'crucible-m-again' })).to.deep.equal([]);
  });
});

/** Code moved from `evaluations.code` into `evaluation_bodies` (CodeAsBody), and back on revert. */
describe('migration CodeAsBody', function () {
  this.timeout(60_000);
  const { url } = scratchDatabase('crucible_c');
  const upTo = MIGRATIONS.findIndex((m) => m === CodeAsBody1763877600010);

  function dataSource(migrations: typeof MIGRATIONS): DataSource {
    return new DataSource({ type: 'postgres', url, migrations, migrationsTableName: 'migrations' });
  }
  async function withSql<T>(use: (client: Client) => Promise<T>): Promise<T> {
    const client = new Client({ connectionString: url });
    await client.connect();
    try {
      return await use(client);
    } finally {
      await client.end();
    }
  }

  it('moves every evaluation’s code into a code body byte for byte, drops the column, and reverts', async () => {
    const before = dataSource(MIGRATIONS.slice(0, upTo));
    await before.initialize();
    await before.runMigrations({ transaction: 'each' });
    await before.destroy();
    const codes = { a: 'print("héllo 😀")', b: 'x = 1\n'.repeat(5000) };
    await withSql(async (sql) => {
      for (const [evalId, code] of Object.entries(codes)) {
        await sql.query(
          `INSERT INTO evaluations (eval_id, status, code, code_hash, code_size, language, engine, timeout_seconds,
                                    created_at, updated_at, revision)
           VALUES ($1, 'queued', $2, repeat('0', 64), $3, 'python', 'docker', 5, now(), now(), 1)`,
          [evalId, code, Buffer.byteLength(code)],
        );
      }
    });

    // Up to this migration only: later ones are not this test's business.
    const all = dataSource(MIGRATIONS.slice(0, upTo + 1));
    await all.initialize();
    try {
      expect((await all.runMigrations({ transaction: 'each' })).map((m) => m.name)).to.deep.equal([
        'CodeAsBody1763877600010',
      ]);
      await withSql(async (sql) => {
        const { rows } = await sql.query<{ eval_id: string; size: string; content: Buffer; s3_key: string | null }>(
          `SELECT eval_id, size::text, content, s3_key FROM evaluation_bodies WHERE kind = 'code' ORDER BY eval_id`,
        );
        expect(rows.map((r) => [r.eval_id, r.size, r.content.toString('utf8'), r.s3_key])).to.deep.equal(
          Object.entries(codes).map(([id, code]) => [id, String(Buffer.byteLength(code)), code, null]),
        );
        const column = await sql.query(
          `SELECT 1 FROM information_schema.columns WHERE table_name = 'evaluations' AND column_name = 'code'`,
        );
        expect(column.rowCount, 'evaluations.code is gone').to.equal(0);
      });

      await all.undoLastMigration({ transaction: 'each' });
      await withSql(async (sql) => {
        const { rows } = await sql.query<{ eval_id: string; code: string }>(
          `SELECT eval_id, code FROM evaluations ORDER BY eval_id`,
        );
        expect(rows.map((r) => [r.eval_id, r.code])).to.deep.equal(Object.entries(codes));
        const bodies = await sql.query(`SELECT 1 FROM evaluation_bodies WHERE kind = 'code'`);
        expect(bodies.rowCount).to.equal(0);
      });
    } finally {
      await all.destroy();
    }
  });
});
