import { expect } from 'chai';
import { Client } from 'pg';
import { MIGRATIONS } from '../../../migrations';
import { loadConfig } from '../../../shared/config';
import { runMigrations } from '../../../shared/postgres';

/**
 * Two instances of the command service starting at once on a fresh database both run the
 * migrations: the migration lock makes one apply them and the other find them applied,
 * instead of both creating the same tables (one of them failing its start-up).
 */
describe('migrations', function () {
  this.timeout(60_000);
  const base = loadConfig({ ...process.env, ENVIRONMENT: 'test' });
  const database = `crucible_m_${Date.now().toString(36)}_${process.pid}`;
  const adminUrl = new URL(base.databaseUrl);
  adminUrl.pathname = '/postgres';
  const url = new URL(base.databaseUrl);
  url.pathname = `/${database}`;

  before(async () => {
    const admin = new Client({ connectionString: adminUrl.toString() });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    await admin.end();
  });
  after(async () => {
    const admin = new Client({ connectionString: adminUrl.toString() });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.end();
  });

  it('applies each migration once when several instances start together on a fresh database', async () => {
    const runs = await Promise.all(
      [1, 2, 3].map((i) => runMigrations({ url: url.toString(), applicationName: `crucible-m-${i}` })),
    );
    const applied = runs.flat();
    expect(applied.sort()).to.deep.equal(MIGRATIONS.map((m) => new m().name).sort());
    expect(
      runs.filter((r) => r.length > 0),
      'one instance applied them all',
    ).to.have.length(1);

    const client = new Client({ connectionString: url.toString() });
    await client.connect();
    try {
      const { rows } = await client.query<{ name: string }>('SELECT name FROM migrations ORDER BY id');
      expect(rows.map((r) => r.name)).to.deep.equal(MIGRATIONS.map((m) => new m().name));
    } finally {
      await client.end();
    }
    // Run again: nothing to do.
    expect(await runMigrations({ url: url.toString(), applicationName: 'crucible-m-again' })).to.deep.equal([]);
  });
});
