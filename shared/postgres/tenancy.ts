import type { Pool, PoolClient, QueryConfig, QueryResult, QueryResultRow } from 'pg';
import { ALL_TENANTS, TENANT_PATTERN } from '../domain/tenants';

/**
 * Row-level security by tenant (migration 17). Every table holding an evaluation's data has a
 * policy that shows (and lets be written) only the rows of the tenant named by the transaction's
 * `crucible.tenant` setting: a statement run without it sees nothing. The services therefore run
 * every statement in a transaction that sets it first — the caller's tenant for an RPC,
 * ALL_TENANTS for their own work over every tenant (the projection, the reaper, the checks).
 *
 * The transaction costs no round trip: the opening message (`BEGIN` and the setting), the
 * statement and `COMMIT` are sent together on the pipelined session (shared/postgres/pool.ts).
 */

/** The transaction setting the policies read. */
export const TENANT_SETTING = 'crucible.tenant';

/**
 * The opening message of a transaction scoped to `tenant`, optionally bounded to
 * `statementTimeoutMs`. `SET LOCAL` takes no bind parameter (nor does a multi-statement
 * message), so the name is checked against TENANT_PATTERN (no quote can pass it) before it is
 * written into the text. `SET LOCAL`, not `set_config()`: the services' logins may not call
 * that function (migration 17), so that no single statement can change its own scope.
 */
export function beginIn(tenant: string, statementTimeoutMs?: number): string {
  const bound =
    statementTimeoutMs === undefined ? '' : `; SET LOCAL statement_timeout = ${Math.ceil(statementTimeoutMs)}`;
  return `BEGIN; ${scopeTo(tenant)}${bound}`;
}

/**
 * The statement that scopes the rest of the open transaction to `tenant` (a transaction that
 * writes for several tenants, a batch of commands, runs it before each one's statement).
 */
export function scopeTo(tenant: string): string {
  if (tenant !== ALL_TENANTS && !TENANT_PATTERN.test(tenant)) {
    throw new RangeError(`not a tenant name: ${JSON.stringify(tenant)}`);
  }
  return `SET LOCAL ${TENANT_SETTING} = '${tenant}'`;
}

/**
 * `statement` in a transaction scoped to `tenant` on a checked-out session, in one round trip.
 * All three answers are awaited, so the session is released only once the transaction ended.
 * The statement's own error comes first: after it, COMMIT only rolls back.
 */
export async function queryInTransaction<R extends QueryResultRow>(
  client: PoolClient,
  tenant: string,
  statement: QueryConfig,
  statementTimeoutMs?: number,
): Promise<QueryResult<R>> {
  const [begin, result, commit] = await Promise.allSettled([
    client.query(beginIn(tenant, statementTimeoutMs)),
    client.query<R>(statement),
    client.query('COMMIT'),
  ]);
  if (result.status === 'rejected') throw result.reason;
  if (commit.status === 'rejected') throw commit.reason;
  if (begin.status === 'rejected') throw begin.reason;
  return result.value;
}

/**
 * Runs `use` on a checked-out session, then gives it back to its pool; a session whose use
 * threw, or whose connection failed meanwhile, is destroyed instead: it may be broken, on a
 * standby (a new connection may reach the new primary), or in a state nobody checked. An error
 * `use` turns into an answer keeps the session.
 */
export async function holdingSession<T>(client: PoolClient, use: (client: PoolClient) => Promise<T>): Promise<T> {
  // A checked-out client has no listener of pg-pool's: a connection error while it is held
  // would otherwise end the process. The query in flight fails with it too.
  let broken = false;
  const onError = (): void => void (broken = true);
  client.on('error', onError);
  try {
    return await use(client);
  } catch (err) {
    broken = true;
    throw err;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}

/** `statement` as `tenant` sees the tables, on a session of `pool` (see queryInTransaction). */
export async function queryAs<R extends QueryResultRow>(
  pool: Pool,
  tenant: string,
  statement: QueryConfig,
): Promise<QueryResult<R>> {
  return holdingSession(await pool.connect(), (client) => queryInTransaction<R>(client, tenant, statement));
}
