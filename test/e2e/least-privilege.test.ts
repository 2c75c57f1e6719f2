import { expect } from 'chai';
import { Client } from 'pg';
import { asLogin, type ServiceLogin } from '../../shared/postgres';
import { call } from '../support/clients';
import { aSubmission } from '../support/requests';
import { startServices, type RunningServices } from '../support/services';

/** The SQLSTATE of `sql` run as `login` (undefined when it succeeded). */
async function sqlStateAs(databaseUrl: string, login: ServiceLogin, sql: string): Promise<string | undefined> {
  const client = new Client({ connectionString: asLogin(databaseUrl, login) });
  await client.connect();
  try {
    await client.query(sql);
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  } finally {
    await client.end();
  }
}

/**
 * The services run as their logins of least privilege (as `make up` runs them), and PostgreSQL
 * itself holds each to its role: the command service cannot rewrite or delete history, the
 * query service cannot write at all.
 */
describe('e2e: each service as its PostgreSQL login of least privilege', function () {
  this.timeout(60_000);
  let services: RunningServices;
  let evalId: string;

  before(async () => {
    services = await startServices();
    const { command } = services.clients;
    ({ evalId } = await call(command, command.submitEvaluation, aSubmission()));
    await call(command, command.startEvaluation, { evalId, executorId: 'x-1', containerId: 'c-1', requestId: '' });
    await call(command, command.recordSecurityEvent, {
      evalId,
      containerCreated: {
        evalId,
        containerId: 'c-1',
        image: 'python:3',
        limits: {
          cpuCores: 1,
          memoryBytes: '1073741824',
          pids: '64',
          network: 'none',
          diskBytes: '0',
          timeoutSeconds: 60,
        },
      },
      requestId: '',
    });
  });

  after(() => services?.close());

  it('serves each service through its own login', async () => {
    const admin = new Client({ connectionString: services.environment.config.databaseUrl });
    await admin.connect();
    try {
      const { rows } = await admin.query<{ usename: string; application_name: string }>(
        `SELECT DISTINCT usename, application_name FROM pg_stat_activity
          WHERE datname = current_database() AND application_name IN ('crucible-command', 'crucible-query')
          ORDER BY application_name`,
      );
      expect(rows).to.deep.equal([
        { usename: 'crucible_command', application_name: 'crucible-command' },
        { usename: 'crucible_query', application_name: 'crucible-query' },
      ]);
    } finally {
      await admin.end();
    }
  });

  it("refuses the command service's login any rewrite of history: the event log, metrics, security audit, deletes, DDL", async () => {
    const url = services.environment.config.databaseUrl;
    const refused = [
      `UPDATE evaluation_events SET event_type = 'EvaluationCancelled' WHERE eval_id = '${evalId}'`,
      `DELETE FROM evaluation_events WHERE eval_id = '${evalId}'`,
      `UPDATE security_audit SET image = 'forged' WHERE eval_id = '${evalId}'`,
      `DELETE FROM security_audit`,
      `DELETE FROM security_events`,
      `UPDATE evaluation_metrics SET metric_value = 0`,
      `DELETE FROM evaluations WHERE eval_id = '${evalId}'`,
      `UPDATE evaluation_bodies SET content = 'forged' WHERE eval_id = '${evalId}'`,
      // Retention's alone: the owner archives, and deletes what it archived.
      `UPDATE evaluations SET archived_at = now() WHERE eval_id = '${evalId}'`,
      `UPDATE evaluations SET archived_at = NULL WHERE eval_id = '${evalId}'`,
      `INSERT INTO archived_evaluations SELECT * FROM archived_evaluations WHERE false`,
      `UPDATE event_log_horizon SET position = position`,
      `TRUNCATE evaluation_events`,
      `CREATE TABLE intruder (x int)`,
    ];
    for (const sql of refused) expect(await sqlStateAs(url, 'crucible_command', sql), sql).to.equal('42501');
    // What it does need, it has: reading, and moving where a blob is kept.
    expect(await sqlStateAs(url, 'crucible_command', `SELECT count(*) FROM evaluation_events`)).to.equal(undefined);
    expect(
      await sqlStateAs(url, 'crucible_command', `UPDATE evaluation_bodies SET blob_store = blob_store WHERE false`),
    ).to.equal(undefined);
  });

  it("refuses the query service's login every write", async () => {
    const url = services.environment.config.databaseUrl;
    for (const sql of [
      `INSERT INTO event_log_head (id, position) VALUES (2, 0)`,
      `UPDATE evaluations SET status = 'completed' WHERE eval_id = '${evalId}'`,
      `DELETE FROM evaluation_bodies`,
    ]) {
      expect(await sqlStateAs(url, 'crucible_query', sql), sql).to.equal('42501');
    }
    expect(await sqlStateAs(url, 'crucible_query', `SELECT count(*) FROM evaluation_log_segments`)).to.equal(undefined);
  });
});
