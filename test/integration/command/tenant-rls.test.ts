import { expect } from 'chai';
import { Client } from 'pg';
import { TENANT_TABLES } from '../../../migrations/1763877600017-TenantRows';
import { asLogin, beginIn, SERVICE_LOGINS, TENANT_SETTING, type ServiceLogin } from '../../../shared/postgres';
import { createTestEnvironment, type TestEnvironment } from '../../support/environment';

type TenantTable = (typeof TENANT_TABLES)[number];

/** The tables whose rows belong to an evaluation, keyed to it by (eval_id, tenant_id). */
const CHILD_TABLES = TENANT_TABLES.filter((t) => t !== 'evaluations');

/** One evaluation per tenant, each with rows in every tenant table. */
const EVALUATIONS = { acme: 'acme-eval-1', globex: 'globex-eval-1' } as const;
type Tenant = keyof typeof EVALUATIONS;

/** What the seed writes per evaluation: six events, one row in every other table. */
const ROWS_PER_EVALUATION: Record<TenantTable, number> = {
  evaluations: 1,
  evaluation_events: 6,
  evaluation_bodies: 1,
  evaluation_metrics: 1,
  security_audit: 1,
  security_events: 1,
  evaluation_log_segments: 1,
  output_uploads: 1,
};

const HASH = 'a'.repeat(64);
const AT = '2025-01-01T00:00:00Z';

/**
 * An evaluation of `tenant` with rows in every tenant table, at event positions from
 * `firstPosition`, written as the owner (who bypasses the policies) with explicit tenant ids,
 * so that what the logins see depends on the policies alone.
 */
async function seed(owner: Client, tenant: Tenant, firstPosition: number): Promise<void> {
  const evalId = EVALUATIONS[tenant];
  const types = [
    'EvaluationQueued',
    'EvaluationContainerCreated',
    'EvaluationStarted',
    'EvaluationMetricsRecorded',
    'EvaluationLogsAppended',
    'EvaluationSecurityViolation',
  ];
  const position = (revision: number): number => firstPosition + revision - 1;
  await owner.query(
    `INSERT INTO evaluations (eval_id, status, code_hash, code_size, language, engine, timeout_seconds,
                              executor_id, container_id, metric_names, stdout_bytes, created_at, updated_at,
                              revision, tenant_id)
     VALUES ($1, 'running', $2, 5, 'python', 'docker', 30, 'exec-1', 'ctr-1', '{cpu}', 3, $3, $3, $4, $5)`,
    [evalId, HASH, AT, types.length, tenant],
  );
  for (const [i, type] of types.entries()) {
    await owner.query(
      `INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, request_id, command_hash,
                                      recorded_at, tenant_id)
       VALUES ($1, $2, $3, $4, '{}', $5, $6, $7, $8)`,
      [position(i + 1), evalId, i + 1, type, `${evalId}-${i + 1}`, HASH, AT, tenant],
    );
  }
  await owner.query(`UPDATE event_log_head SET position = GREATEST(position, $1)`, [position(types.length)]);
  await owner.query(
    `INSERT INTO evaluation_bodies (eval_id, kind, size, content, tenant_id) VALUES ($1, 'code', 5, '\\x6869212121', $2)`,
    [evalId, tenant],
  );
  await owner.query(
    `INSERT INTO security_audit (eval_id, container_id, event_type, image, recorded_at, occurred_at, revision,
                                 position, tenant_id)
     VALUES ($1, 'ctr-1', 'container_created', 'python:3', $2, $2, 2, $3, $4)`,
    [evalId, AT, position(2), tenant],
  );
  await owner.query(
    `INSERT INTO evaluation_metrics (eval_id, metric_name, metric_value, recorded_at, revision, measured_at, tenant_id)
     VALUES ($1, 'cpu', 0.5, $2, 4, $2, $3)`,
    [evalId, AT, tenant],
  );
  await owner.query(
    `INSERT INTO evaluation_log_segments (eval_id, stream, start_offset, size, content, revision, position,
                                          recorded_at, tenant_id)
     VALUES ($1, 'stdout', 0, 3, '\\x686921', 5, $2, $3, $4)`,
    [evalId, position(5), AT, tenant],
  );
  await owner.query(
    `INSERT INTO security_events (eval_id, container_id, violation_type, severity, recorded_at, occurred_at,
                                  revision, position, tenant_id)
     VALUES ($1, 'ctr-1', 'memory', 'high', $2, $2, 6, $3, $4)`,
    [evalId, AT, position(6), tenant],
  );
  await owner.query(
    `INSERT INTO output_uploads (upload_id, eval_id, s3_upload_id, s3_key, size, sha256, part_size, created_at,
                                 expires_at, tenant_id)
     VALUES ($1, $2, 'mpu-1', $3, 10, $4, 5, $5, $5, $6)`,
    [`${evalId}-upload`, evalId, `outputs/${evalId}`, HASH, AT, tenant],
  );
}

/** The rows of `table` the seed gave `tenants`, as visibleRows lists them. */
function seeded(table: TenantTable, tenants: readonly Tenant[]): string[] {
  return tenants.flatMap((t) => Array<string>(ROWS_PER_EVALUATION[table]).fill(`${t}/${EVALUATIONS[t]}`));
}

/** `tenant/eval_id` of every row of `table` the session sees (under `where`), in order. */
async function visibleRows(client: Client, table: TenantTable, where = 'true'): Promise<string[]> {
  const { rows } = await client.query<{ row: string }>(
    `SELECT tenant_id || '/' || eval_id AS row FROM ${table} WHERE ${where} ORDER BY tenant_id, eval_id`,
  );
  return rows.map((r) => r.row);
}

/** visibleRows of every tenant table. */
async function everyTable(client: Client, where = 'true'): Promise<Record<TenantTable, string[]>> {
  const seen = {} as Record<TenantTable, string[]>;
  for (const table of TENANT_TABLES) seen[table] = await visibleRows(client, table, where);
  return seen;
}

function expected(rowsOf: (table: TenantTable) => string[]): Record<TenantTable, string[]> {
  return Object.fromEntries(TENANT_TABLES.map((t) => [t, rowsOf(t)])) as Record<TenantTable, string[]>;
}

/** `count(*)` of every tenant table. */
async function counts(client: Client): Promise<Record<TenantTable, number>> {
  const seen = {} as Record<TenantTable, number>;
  for (const table of TENANT_TABLES) {
    const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
    seen[table] = rows[0]?.n ?? -1;
  }
  return seen;
}

const NONE = expected(() => []);
const zeroCounts = (): Record<TenantTable, number> =>
  Object.fromEntries(TENANT_TABLES.map((t) => [t, 0])) as Record<TenantTable, number>;

/**
 * `work` in a transaction scoped to `tenant` (`undefined`: one that names none), committed: the
 * way the services run every statement (shared/postgres/tenancy.ts).
 */
async function scoped<T>(client: Client, tenant: string | undefined, work: () => Promise<T>): Promise<T> {
  await client.query(tenant === undefined ? 'BEGIN' : beginIn(tenant));
  try {
    const result = await work();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  }
}

interface Outcome {
  readonly sqlState: string | undefined;
  readonly rowCount: number | null;
}

/**
 * How `sql` ends in a transaction scoped to `tenant`, after `before` (which must succeed), rolled
 * back whatever it did.
 */
async function attempt(
  client: Client,
  tenant: string | undefined,
  sql: string,
  before: readonly string[] = [],
): Promise<Outcome> {
  await client.query(tenant === undefined ? 'BEGIN' : beginIn(tenant));
  try {
    for (const statement of before) await client.query(statement);
    try {
      const { rowCount } = await client.query(sql);
      return { sqlState: undefined, rowCount };
    } catch (err) {
      return { sqlState: (err as { code?: string }).code, rowCount: null };
    }
  } finally {
    await client.query('ROLLBACK');
  }
}

const succeeded = (rowCount: number): Outcome => ({ sqlState: undefined, rowCount });
const refused = (sqlState: string): Outcome => ({ sqlState, rowCount: null });

/** The whole error a statement ended with, or, had it succeeded, what it returned. */
type Ending =
  | { readonly sqlState: string | undefined; readonly message: string; readonly detail: string | undefined }
  | { readonly rowCount: number | null; readonly rows: unknown[] };

/**
 * How `sql` ends in a transaction scoped to `tenant`, rolled back whatever it did: as attempt,
 * with the error's words, and the rows should it return any (which a failed assertion then shows).
 */
async function ending(client: Client, tenant: string, sql: string): Promise<Ending> {
  await client.query(beginIn(tenant));
  try {
    const { rowCount, rows } = await client.query(sql);
    return { rowCount, rows };
  } catch (err) {
    const { code, message, detail } = err as { code?: string; message: string; detail?: string };
    return { sqlState: code, message, detail };
  } finally {
    await client.query('ROLLBACK');
  }
}

/**
 * The columns and values (tenant_id aside) of a new row of each tenant table for the evaluation
 * `id` (an SQL literal): in evaluations, a new evaluation of that id; in the others, a row that
 * collides with no unique key of the seed's rows (revision 7, position 1000, an output body,
 * offset 3), so that nothing but the tenant and the evaluation it names decides its fate.
 */
const NEW_ROWS: Record<TenantTable, (id: string) => readonly [columns: string, values: string]> = {
  evaluations: (id) => [
    'eval_id, status, code_hash, code_size, language, engine, timeout_seconds, created_at, updated_at, revision',
    `${id}, 'queued', '${HASH}', 1, 'python', 'docker', 30, now(), now(), 1`,
  ],
  evaluation_events: (id) => [
    'position, eval_id, revision, event_type, data, command_hash, recorded_at',
    `1000, ${id}, 7, 'EvaluationStarted', '{}', '${HASH}', now()`,
  ],
  evaluation_bodies: (id) => ['eval_id, kind, size, content', `${id}, 'output', 1, '\\x21'`],
  evaluation_metrics: (id) => [
    'eval_id, metric_name, metric_value, recorded_at, revision, measured_at',
    `${id}, 'cpu', 1, now(), 7, now()`,
  ],
  security_audit: (id) => [
    'eval_id, container_id, event_type, recorded_at, occurred_at, revision, position',
    `${id}, 'ctr-2', 'container_created', now(), now(), 7, 1000`,
  ],
  security_events: (id) => [
    'eval_id, container_id, violation_type, recorded_at, occurred_at, revision, position',
    `${id}, 'ctr-2', 'cpu', now(), now(), 7, 1000`,
  ],
  evaluation_log_segments: (id) => [
    'eval_id, stream, start_offset, size, content, revision, position, recorded_at',
    `${id}, 'stdout', 3, 1, '\\x21', 7, 1000, now()`,
  ],
  output_uploads: (id) => [
    'upload_id, eval_id, s3_upload_id, s3_key, size, sha256, part_size, created_at, expires_at',
    `'intruder-upload', ${id}, 'mpu-2', 'outputs/intruder', 1, '${HASH}', 1, now(), now()`,
  ],
};

/** A new row of `table` for evaluation `evalId`; its tenant_id named only when `tenant` is given (else the default). */
function newRow(table: TenantTable, evalId: string, tenant?: string): string {
  const [columns, values] = NEW_ROWS[table](`'${evalId}'`);
  return tenant === undefined
    ? `INSERT INTO ${table} (${columns}) VALUES (${values})`
    : `INSERT INTO ${table} (${columns}, tenant_id) VALUES (${values}, '${tenant}')`;
}

/** A new evaluations row (see newRow). */
const newEvaluation = (evalId: string, tenant?: string): string => newRow('evaluations', evalId, tenant);

describe('command: tenant row-level security, as the services connect to PostgreSQL', function () {
  let env: TestEnvironment;

  /** A session of `login` on this spec's database, ended whatever `work` does. */
  async function asService<T>(login: ServiceLogin, work: (client: Client) => Promise<T>): Promise<T> {
    const client = new Client({
      connectionString: asLogin(env.config.databaseUrl, login),
      application_name: 'crucible-tenant-rls-it',
    });
    await client.connect();
    try {
      return await work(client);
    } finally {
      await client.end();
    }
  }

  before(async () => {
    env = await createTestEnvironment();
    const owner = new Client({ connectionString: env.config.databaseUrl });
    await owner.connect();
    try {
      await seed(owner, 'acme', 1);
      await seed(owner, 'globex', 101);
      // The owner is not subject to the policies: every zero below is the policy's, not an empty table.
      expect(await everyTable(owner)).to.deep.equal(expected((t) => seeded(t, ['acme', 'globex'])));
    } finally {
      await owner.end();
    }
  });

  after(() => env?.close());

  for (const { login } of SERVICE_LOGINS) {
    describe(`reading as ${login}`, () => {
      it('sees no row of any tenant table outside a transaction that names a tenant', async () => {
        await asService(login, async (client) => {
          expect(await counts(client), 'autocommit').to.deep.equal(zeroCounts());
          expect(await scoped(client, undefined, () => counts(client)), 'BEGIN alone').to.deep.equal(zeroCounts());
          expect(await everyTable(client), 'rows').to.deep.equal(NONE);
        });
      });

      it("sees acme's rows alone when its transaction names acme, however the query asks for globex's", async () => {
        await asService(login, (client) =>
          scoped(client, 'acme', async () => {
            const acmeOnly = expected((t) => seeded(t, ['acme']));
            expect(await everyTable(client), 'everything').to.deep.equal(acmeOnly);
            expect(await everyTable(client, `eval_id = '${EVALUATIONS.globex}'`), 'by id').to.deep.equal(NONE);
            expect(await everyTable(client, `tenant_id = 'globex'`), 'by tenant').to.deep.equal(NONE);
            expect(await everyTable(client, `eval_id = '${EVALUATIONS.globex}' OR true`), 'OR true').to.deep.equal(
              acmeOnly,
            );
            expect(await everyTable(client, `tenant_id IN ('acme', 'globex', '*')`), 'IN').to.deep.equal(acmeOnly);
            const joined = await client.query<{ eval_id: string }>(
              `SELECT DISTINCT e.eval_id FROM evaluation_events e JOIN evaluations v USING (eval_id) ORDER BY 1`,
            );
            expect(joined.rows, 'join').to.deep.equal([{ eval_id: EVALUATIONS.acme }]);
          }),
        );
      });

      it("raises no error from globex's hidden rows: the policy filters before the query's own conditions", async () => {
        // Were the query's condition evaluated on globex's rows first, the division by zero would
        // tell acme that a row with that id exists.
        const probe = `1 / (CASE WHEN eval_id = '${EVALUATIONS.globex}' THEN 0 ELSE 1 END) = 1`;
        await asService(login, async (client) => {
          const seen = await scoped(client, 'acme', () => everyTable(client, probe));
          expect(seen).to.deep.equal(expected((t) => seeded(t, ['acme'])));
        });
      });

      it('sees nothing again once the transaction naming acme has ended: the setting is transaction-local', async () => {
        await asService(login, async (client) => {
          const during = await scoped(client, 'acme', () => counts(client));
          expect(during.evaluations, 'inside the transaction').to.equal(1);
          expect(await counts(client), 'autocommit after it').to.deep.equal(zeroCounts());
          expect(await scoped(client, undefined, () => counts(client)), 'next BEGIN').to.deep.equal(zeroCounts());
        });
      });

      it("sees both tenants' rows under *, the services' own scope over every tenant", async () => {
        await asService(login, async (client) => {
          expect(await scoped(client, '*', () => everyTable(client))).to.deep.equal(
            expected((t) => seeded(t, ['acme', 'globex'])),
          );
        });
      });

      it('cannot widen its scope from inside a statement: set_config is refused (42501) wherever the statement calls it', async () => {
        // The policies read crucible.tenant as the statement runs, so a statement that could set it
        // (set_config in its WHERE, a CTE, a subquery...) would filter by a scope of its own
        // choosing: an injected condition would read every tenant's rows. The services set it with
        // SET LOCAL, a statement of its own (beginIn), and the logins may not call set_config at all.
        const widen = (isLocal: boolean): string => `set_config('${TENANT_SETTING}', '*', ${isLocal})`;
        const statements = {
          WHERE: `SELECT eval_id FROM evaluations WHERE ${widen(true)} IS NOT NULL`,
          CTE: `WITH widened AS MATERIALIZED (SELECT ${widen(true)} AS tenant)
                SELECT eval_id FROM widened, evaluations ORDER BY eval_id`,
          'scalar subquery': `SELECT eval_id FROM evaluations WHERE (SELECT ${widen(true)}) = '*'`,
          LATERAL: `SELECT e.eval_id FROM (SELECT ${widen(true)} AS tenant) w,
                      LATERAL (SELECT eval_id FROM evaluations WHERE w.tenant IS NOT NULL) e`,
          'select list': `SELECT ${widen(true)}, (SELECT array_agg(eval_id ORDER BY eval_id) FROM evaluations)`,
          'for the session': `SELECT eval_id FROM evaluations WHERE ${widen(false)} IS NOT NULL`,
        };
        await asService(login, async (client) => {
          for (const [variant, sql] of Object.entries(statements)) {
            expect(await ending(client, 'acme', sql), variant).to.deep.equal({
              sqlState: '42501',
              message: 'permission denied for function set_config',
              detail: undefined,
            });
          }
          // Nothing of it stayed: the session's next transaction under acme sees acme's rows alone,
          // and outside one it sees none.
          expect(await scoped(client, 'acme', () => everyTable(client)), 'next under acme').to.deep.equal(
            expected((t) => seeded(t, ['acme'])),
          );
          expect(await counts(client), 'autocommit after').to.deep.equal(zeroCounts());
        });
      });
    });
  }

  describe('writing as crucible_command', () => {
    const acmeId = `'${EVALUATIONS.acme}'`;
    const globexId = `'${EVALUATIONS.globex}'`;

    it("adds a row to acme's scope under acme, taking acme as its tenant", async () => {
      // The control for the refusals below: the same INSERT is allowed when the tenant is right.
      await asService('crucible_command', async (client) => {
        await client.query(beginIn('acme'));
        try {
          const { rows } = await client.query<{ tenant_id: string }>(
            `${newEvaluation('acme-eval-2')} RETURNING tenant_id`,
          );
          expect(rows).to.deep.equal([{ tenant_id: 'acme' }]);
        } finally {
          await client.query('ROLLBACK');
        }
      });
    });

    it('refuses, under acme, a new row that names globex as its tenant (42501), in every table it may insert into', async () => {
      await asService('crucible_command', async (client) => {
        for (const table of TENANT_TABLES) {
          // A new evaluation of its own; in the other tables, a row of acme's evaluation.
          const evalId = table === 'evaluations' ? 'intruder-1' : EVALUATIONS.acme;
          expect(await attempt(client, 'acme', newRow(table, evalId, 'globex')), table).to.deep.equal(refused('42501'));
          // Without the foreign tenant the very same row is accepted: the refusal is the tenant's.
          expect(await attempt(client, 'acme', newRow(table, evalId)), `${table} as acme`).to.deep.equal(succeeded(1));
        }
      });
    });

    it("changes none of globex's rows under acme, and cannot hand one of acme's to globex", async () => {
      await asService('crucible_command', async (client) => {
        const updates = [
          [`UPDATE evaluations SET executor_id = 'x' WHERE eval_id = `, 'evaluations'],
          [`UPDATE evaluation_bodies SET blob_store = 'file' WHERE eval_id = `, 'evaluation_bodies'],
          [`UPDATE evaluation_log_segments SET blob_store = 'file' WHERE eval_id = `, 'evaluation_log_segments'],
          [`UPDATE output_uploads SET state = 'aborted' WHERE eval_id = `, 'output_uploads'],
        ] as const;
        for (const [update, table] of updates) {
          expect(await attempt(client, 'acme', `${update}${globexId}`), `${table}: globex's`).to.deep.equal(
            succeeded(0),
          );
          expect(await attempt(client, 'acme', `${update}${acmeId}`), `${table}: acme's`).to.deep.equal(succeeded(1));
          expect(await attempt(client, 'acme', `${update}${globexId} OR true`), `${table}: OR true`).to.deep.equal(
            succeeded(1),
          );
        }
        expect(
          await attempt(client, 'acme', `UPDATE evaluations SET tenant_id = 'globex' WHERE eval_id = ${acmeId}`),
        ).to.deep.equal(refused('42501'));
      });
    });

    it("cannot name globex's evaluation in a row under acme (23503): the same error as for an id nobody has, in every table that names an evaluation", async () => {
      // A foreign key is checked past row-level security. Keyed on eval_id alone, a row of acme's
      // could name globex's evaluation, and its being accepted (where an unknown id is refused)
      // would tell acme that the id exists. Keyed on (eval_id, tenant_id), with the tenant taken
      // from the setting, it finds the evaluation only among acme's own.
      const nobodys = 'nobodys-eval';
      await asService('crucible_command', async (client) => {
        for (const table of CHILD_TABLES) {
          // The control: the same row of acme's own evaluation is accepted.
          expect(await attempt(client, 'acme', newRow(table, EVALUATIONS.acme)), `${table}: acme's`).to.deep.equal(
            succeeded(1),
          );
          const unknown = await ending(client, 'acme', newRow(table, nobodys));
          expect(unknown, `${table}: nobody's`).to.include({ sqlState: '23503' });
          // Word for word the same refusal (PostgreSQL names no key of a table under row-level
          // security): nothing in it says that globex's id exists.
          const globex = await ending(client, 'acme', newRow(table, EVALUATIONS.globex));
          expect(globex, `${table}: globex's`).to.deep.equal(unknown);
        }
      });
    });

    it('moves no evaluation to another tenant and renames none, even under * (42501): the UPDATE grant names neither column', async () => {
      // Under * the policy admits the row before and after the change (and the CHECK any tenant's
      // name), so the grant alone keeps a row where it is. A new evaluation, which no row of
      // another table names yet, shows that it is the grant that refuses, not those rows' keys.
      const bare = 'acme-eval-bare';
      const insertBare = newEvaluation(bare, 'acme');
      const changes = {
        'to globex': `UPDATE evaluations SET tenant_id = 'globex' WHERE eval_id = `,
        renamed: `UPDATE evaluations SET eval_id = 'renamed' WHERE eval_id = `,
      };
      await asService('crucible_command', async (client) => {
        for (const tenant of ['*', 'acme']) {
          for (const [change, update] of Object.entries(changes)) {
            const as = `${change} under ${tenant}`;
            expect(await attempt(client, tenant, `${update}${acmeId}`), as).to.deep.equal(refused('42501'));
            expect(await attempt(client, tenant, `${update}'${bare}'`, [insertBare]), `${as}, new`).to.deep.equal(
              refused('42501'),
            );
          }
          // Nor by the back door of an upsert.
          const upsert = `${newEvaluation(EVALUATIONS.acme, 'acme')} ON CONFLICT (eval_id) DO UPDATE SET tenant_id = 'globex'`;
          expect(await attempt(client, tenant, upsert), `upsert under ${tenant}`).to.deep.equal(refused('42501'));
          // The control: every other column of the same rows is the writer's to change.
          const other = `UPDATE evaluations SET executor_id = 'exec-2' WHERE eval_id = `;
          expect(await attempt(client, tenant, `${other}${acmeId}`), `other column under ${tenant}`).to.deep.equal(
            succeeded(1),
          );
          expect(
            await attempt(client, tenant, `${other}'${bare}'`, [insertBare]),
            `other column under ${tenant}, new`,
          ).to.deep.equal(succeeded(1));
        }
      });
    });

    it('writes nothing under * without a tenant: the default is *, which the CHECK refuses (23514)', async () => {
      await asService('crucible_command', async (client) => {
        expect(await attempt(client, '*', newEvaluation('nobodys-1')), 'default').to.deep.equal(refused('23514'));
        expect(await attempt(client, '*', newEvaluation('nobodys-2', '*')), 'named *').to.deep.equal(refused('23514'));
        expect(await attempt(client, '*', newEvaluation('nobodys-3', '')), 'named empty').to.deep.equal(
          refused('23514'),
        );
      });
    });

    it('writes nothing without a tenant setting, neither in a new session nor after a scoped transaction', async () => {
      await asService('crucible_command', async (client) => {
        // Never set in the session, the setting reads as NULL: the policy's check refuses first.
        expect(await attempt(client, undefined, newEvaluation('nobodys-4')), 'never set').to.deep.equal(
          refused('42501'),
        );
        expect(await attempt(client, undefined, newEvaluation('nobodys-5', 'acme')), 'naming acme').to.deep.equal(
          refused('42501'),
        );
        await scoped(client, 'acme', () => client.query('SELECT 1'));
        // Once a transaction has set it, it reads as '' afterwards: no tenant. The column's default
        // is then the default tenant, whose rows the policy admits no more than acme's.
        expect(await attempt(client, undefined, newEvaluation('nobodys-6')), 'after acme').to.deep.equal(
          refused('42501'),
        );
        expect(
          await attempt(client, undefined, newEvaluation('nobodys-7', 'acme')),
          'after, naming acme',
        ).to.deep.equal(refused('42501'));
      });
    });
  });
});
