import { expect } from 'chai';
import { Client } from 'pg';
import { EVENT_TYPE_TO_PROTO } from '../../shared/domain';
import type { EventType, EvaluationUpdate } from '../../shared/generated/crucible/storage/v1/evaluation';

/**
 * The event log in PostgreSQL: the reference every read model, watcher and acknowledged
 * command is compared with.
 */

export interface LoggedEvent {
  readonly position: bigint;
  readonly evalId: string;
  readonly revision: bigint;
  readonly eventType: string;
  /** The command's request id (null for a command sent without one). */
  readonly requestId: string | null;
}

/** Runs `fn` on a connection of its own, closed afterwards (an error on an idle connection is not the test's). */
export async function withDatabase<T>(databaseUrl: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: databaseUrl, application_name: 'crucible-test-inspect' });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Every event, in position order (the table's column: the text alias would sort "10" before "2"). */
export function readEventLog(databaseUrl: string): Promise<LoggedEvent[]> {
  return withDatabase(databaseUrl, async (client) => {
    const { rows } = await client.query<{
      position: string;
      eval_id: string;
      revision: string;
      event_type: string;
      request_id: string | null;
    }>(
      `SELECT e.position::text AS position, e.eval_id, e.revision::text AS revision, e.event_type, e.request_id
         FROM evaluation_events e ORDER BY e.position`,
    );
    return rows.map((r) => ({
      position: BigInt(r.position),
      evalId: r.eval_id,
      revision: BigInt(r.revision),
      eventType: r.event_type,
      requestId: r.request_id,
    }));
  });
}

/** Positions are exactly 1..N: no gap, no duplicate (the rows are ordered by position). */
export function expectDense(log: readonly LoggedEvent[]): void {
  const wrong = log.findIndex((e, i) => e.position !== BigInt(i + 1));
  expect(wrong, `position at index ${wrong}: ${log[wrong]?.position} (expected ${wrong + 1})`).to.equal(-1);
}

/** The wire's EventType as the log spells it (EVENT_TYPE_EVALUATION_QUEUED → EvaluationQueued). */
export function logEventType(eventType: EventType): string {
  return (
    Object.entries(EVENT_TYPE_TO_PROTO).find(([, wire]) => wire === eventType)?.[0] ?? `unknown event type ${eventType}`
  );
}

/** Short form of updates for assertion messages and comparisons: "position evalId@revision EventType". */
export function describeUpdate(u: EvaluationUpdate): string {
  return `${u.position} ${u.evaluation?.evalId ?? '?'}@${u.revision} ${logEventType(u.eventType)}`;
}

/** The same short form of a logged event, so that the two compare as strings. */
export function describeLogged(e: LoggedEvent): string {
  return `${e.position} ${e.evalId}@${e.revision} ${e.eventType}`;
}

/**
 * The updates a watcher delivered equal the log after `after`, one for one, in order: same
 * positions (so no gap and no duplicate), same evaluation, revision and event type at each.
 */
export function expectSameAsLog(
  updates: readonly EvaluationUpdate[],
  log: readonly LoggedEvent[],
  after = 0n,
  what = 'firehose',
): void {
  const expected = log.filter((e) => e.position > after).map(describeLogged);
  const actual = updates.map(describeUpdate);
  const firstDiff = actual.findIndex((a, i) => a !== expected[i]);
  if (actual.length === expected.length && firstDiff === -1) return;
  const at = firstDiff === -1 ? Math.min(actual.length, expected.length) : firstDiff;
  throw new Error(
    `${what}: ${actual.length} updates vs ${expected.length} events in the log after ${after}; first difference at ` +
      `index ${at}: got ${actual.slice(Math.max(0, at - 2), at + 3).join(', ') || '(none)'}, ` +
      `expected ${expected.slice(Math.max(0, at - 2), at + 3).join(', ') || '(none)'}`,
  );
}
