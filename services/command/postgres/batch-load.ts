import type { PoolClient, QueryResult } from 'pg';
import { holdingSession, preparedStatement, scopeTo } from '../../../shared/postgres';
import type { Settled } from '../application/group-commit';
import type { EvaluationSnapshot, LoggedCommand } from '../domain';
import { loggedCommandOf, snapshotOf, STATE_ROW, type StateRow } from './state-row';

/** What one command loads: its evaluation and the earlier command with its request id, as its tenant sees them. */
export interface LoadRequest {
  readonly evalId: string | undefined;
  readonly requestId: string | undefined;
  readonly tenant: string;
}

export interface Loaded {
  readonly snapshot?: EvaluationSnapshot;
  readonly priorRequest?: LoggedCommand;
}

// The two kinds of row a load reads (StateRow): an evaluation's state (STATE_ROW, from e, cur
// and sub), and an earlier command r with the request id: the same in both statements below.
const REQUEST_ROW = `SELECT 'request', r.eval_id, r.request_id, NULL, r.revision::text, r.position::text, r.command_hash,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL`;

// Every evaluation of $1 with its first and latest command, and every earlier command with a
// request id of $2 (which may belong to another evaluation): one statement for a batch of
// loads of one tenant. Each id is looked up on its own (LATERAL, kept apart by LIMIT 1: a
// request id is unique within a tenant), so that the plan is index lookups whatever the
// number of ids: with "= ANY ($1)" a cached generic plan may join the whole event table.
const LOAD_BATCH_SQL = `
  ${STATE_ROW}
    FROM unnest($1::text[]) AS wanted (eval_id)
   CROSS JOIN LATERAL (SELECT * FROM evaluations WHERE eval_id = wanted.eval_id LIMIT 1) e
   CROSS JOIN LATERAL (SELECT position, command_hash FROM evaluation_events
                        WHERE eval_id = e.eval_id AND revision = e.revision LIMIT 1) cur
   CROSS JOIN LATERAL (SELECT position, command_hash FROM evaluation_events
                        WHERE eval_id = e.eval_id AND revision = 1 LIMIT 1) sub
  UNION ALL
  ${REQUEST_ROW}
    FROM unnest($2::text[]) AS wanted (request_id)
   CROSS JOIN LATERAL (SELECT eval_id, request_id, revision, position, command_hash FROM evaluation_events
                        WHERE request_id = wanted.request_id LIMIT 1) r`;

// The same for one evaluation and at most one request id, as plain equalities: a lone load (no
// company in its batch) costs less this way than through unnest and LATERAL (about 0.15 ms of
// a 1.2 ms command at concurrency 1). Exported for the bench's command floor, which runs one
// load per command.
export const LOAD_ONE_SQL = `
  ${STATE_ROW}
    FROM evaluations e
    JOIN evaluation_events cur ON cur.eval_id = e.eval_id AND cur.revision = e.revision
    JOIN evaluation_events sub ON sub.eval_id = e.eval_id AND sub.revision = 1
   WHERE e.eval_id = $1
  UNION ALL
  ${REQUEST_ROW}
    FROM evaluation_events r
   WHERE $2::text IS NOT NULL AND r.request_id = $2`;

/**
 * Loads a batch of commands' states in one transaction and one round trip: `BEGIN`, for each
 * tenant among them its scope and one statement for all of its loads, `COMMIT`, sent at once on
 * the pipelined session. Any failure is every member's (it throws): reads change nothing.
 */
export async function loadBatch(
  connect: () => Promise<PoolClient>,
  requests: readonly LoadRequest[],
  settle: (index: number, outcome: Settled<Loaded>) => void,
): Promise<void> {
  const byTenant = new Map<string, number[]>();
  requests.forEach((request, i) => {
    const members = byTenant.get(request.tenant);
    if (members === undefined) byTenant.set(request.tenant, [i]);
    else members.push(i);
  });
  const client = await connect();
  const results = await holdingSession(client, async (session) => {
    const sent: Promise<QueryResult>[] = [session.query('BEGIN')];
    const statementOf = new Map<string, number>();
    for (const [tenant, members] of byTenant) {
      const evalIds = [...new Set(members.flatMap((i) => requests[i]!.evalId ?? []))];
      const requestIds = [...new Set(members.flatMap((i) => requests[i]!.requestId ?? []))];
      sent.push(session.query(scopeTo(tenant)));
      statementOf.set(tenant, sent.length);
      sent.push(
        session.query(
          evalIds.length <= 1 && requestIds.length <= 1
            ? preparedStatement(LOAD_ONE_SQL, [evalIds[0] ?? '', requestIds[0] ?? null])
            : preparedStatement(LOAD_BATCH_SQL, [evalIds, requestIds]),
        ),
      );
    }
    sent.push(session.query('COMMIT'));
    const answers = await Promise.allSettled(sent);
    const failure = answers.find((a) => a.status === 'rejected');
    if (failure !== undefined) throw failure.reason;
    return new Map(
      [...statementOf].map(([tenant, at]) => [
        tenant,
        (answers[at] as PromiseFulfilledResult<QueryResult<StateRow>>).value.rows,
      ]),
    );
  });
  for (const [tenant, members] of byTenant) {
    const states = new Map<string, EvaluationSnapshot>();
    const commands = new Map<string, LoggedCommand>();
    for (const row of results.get(tenant) ?? []) {
      if (row.source === 'request' && row.request_id !== null) commands.set(row.request_id, loggedCommandOf(row));
      const snapshot = row.source === 'state' ? snapshotOf(row) : undefined;
      if (snapshot !== undefined) states.set(row.eval_id, snapshot);
    }
    for (const i of members) {
      const { evalId, requestId } = requests[i]!;
      const snapshot = evalId === undefined ? undefined : states.get(evalId);
      const priorRequest = requestId === undefined ? undefined : commands.get(requestId);
      settle(i, {
        ok: true,
        value: {
          ...(snapshot !== undefined ? { snapshot } : {}),
          ...(priorRequest !== undefined ? { priorRequest } : {}),
        },
      });
    }
  }
}
