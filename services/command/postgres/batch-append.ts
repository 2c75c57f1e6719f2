import type { PoolClient, QueryConfig, QueryResult } from 'pg';
import type { RecordedEvent } from '../../../shared/domain';
import { CommitOutcomeUnknownError, DeadlineError, UnavailableError } from '../../../shared/errors';
import {
  holdingSession,
  leavesOutcomeUnknown,
  postgresUnavailableCause,
  preparedStatement,
  scopeTo,
  uniqueViolation,
} from '../../../shared/postgres';
import type { Settled } from '../application/group-commit';
import type { AppendOutcome, AppendRequest } from '../application/ports';
import { appendStatement } from './append-statement';
import { snapshotOf, type StateRow } from './state-row';

type AppendRow = StateRow;

/** Where a batch's writes go, and the sessions' own statement_timeout (Infinity: none). */
export interface BatchTarget {
  readonly sessionTimeoutMs: number;
  /** Checks a session out, turning a PostgreSQL that cannot give one into UnavailableError. */
  readonly connect: () => Promise<PoolClient>;
}

/** How one attempt at a batch ended, when it did not fail as a whole (it throws then). */
type Attempt =
  /** Each member's outcome: its row (none: a conflict), or its own error when pg refused its statement unsent. */
  | { readonly kind: 'committed'; readonly members: readonly Settled<AppendRow | undefined>[] }
  /** The member at `index` (of the attempt's) failed alone; nothing was written. */
  | { readonly kind: 'member failed'; readonly index: number; readonly outcome: Settled<AppendOutcome> }
  /** The batch ran past the nearest deadline of its members and PostgreSQL cancelled it. */
  | { readonly kind: 'deadline' };

/**
 * Writes a batch of commands in one transaction, one round trip: the opening (`BEGIN`, the
 * append lock, any deadline bound), each command's statement (appendStatement, in its tenant's
 * scope), `COMMIT`, all sent at once on the pipelined session. Each statement sees the ones
 * before it, so a command decided against a revision that an earlier member moved finds no row
 * and is a conflict (decided again by its caller), exactly as against another transaction.
 *
 * The append lock (`event_log_head`'s row) is taken first, before any evaluation row: batches
 * lock several rows, and taking them in one order everywhere is what keeps two instances'
 * batches from deadlocking. Positions stay dense and commit-ordered: each statement takes the
 * next one only when its command is written, under a lock held until the batch commits.
 *
 * PostgreSQL aborts the whole transaction at the first failing statement. When that failure is
 * the member's own (its row broke a constraint or a policy: a concurrent duplicate request id,
 * for one), that member alone gets it, and the batch is sent again without it: a failing
 * command never fails its neighbours, at the price of a round trip, and nothing is half-written.
 * (A member that lost a unique key hears so once the batch has ended.) When the batch outlasts
 * a member's deadline, that member is refused the same way. Any other
 * failure (a lock wait past lock_timeout, an outage, a lost connection) is every member's.
 */
export async function writeBatch(
  target: BatchTarget,
  requests: readonly AppendRequest[],
  settle: (index: number, outcome: Settled<AppendOutcome>) => void,
): Promise<void> {
  const statements: QueryConfig[] = [];
  let open: number[] = [];
  // Members that lost a unique key to a neighbour (or would): told once the batch has ended, so
  // that when they load again they see what the winner wrote instead of deciding again on the
  // state from before it and losing once more.
  const conflicts: number[] = [];
  const requestIds = new Set<string>();
  // Whoever's deadline has passed is not sent (again): refused, nothing written.
  const stillInTime = (i: number): boolean => {
    const boundMs = deadlineBound(requests[i]!.deadline, target.sessionTimeoutMs);
    if (boundMs === undefined || boundMs > 0) return true;
    settle(i, failed(new DeadlineError("the call's deadline passed before the write was sent; nothing was written")));
    return false;
  };
  requests.forEach((request, i) => {
    if (!stillInTime(i)) return;
    if (request.requestId !== undefined) {
      // A second command with a request id already in the batch would break its unique key
      // and cost the batch a round trip: a conflict at once (its caller answers as the first).
      const key = `${request.tenant}\u0000${request.requestId}`;
      if (requestIds.has(key)) {
        conflicts.push(i);
        return;
      }
      requestIds.add(key);
    }
    try {
      const { text, values } = appendStatement(request);
      statements[i] = preparedStatement(text, values);
      open.push(i);
    } catch (err) {
      settle(i, failed(err));
    }
  });
  while (open.length > 0) {
    // A retry is a new attempt: whoever's deadline passed meanwhile is not sent again.
    open = open.filter(stillInTime);
    if (open.length === 0) break;
    const members = open.map((i) => requests[i]!);
    let attempt: Attempt;
    try {
      attempt = await writeOnce(
        target,
        members,
        open.map((i) => statements[i]!),
      );
    } catch (err) {
      for (const i of open) settle(i, failed(err));
      break;
    }
    if (attempt.kind === 'committed') {
      open.forEach((i, k) => {
        const member = attempt.members[k]!;
        settle(i, member.ok ? { ok: true, value: outcomeOf(requests[i]!, member.value) } : member);
      });
      break;
    }
    if (attempt.kind === 'member failed') {
      const member = open[attempt.index]!;
      const { outcome } = attempt;
      if (outcome.ok && outcome.value.kind === 'conflict') conflicts.push(member);
      else settle(member, outcome);
      open = open.filter((_, k) => k !== attempt.index);
      continue;
    }
    // Cancelled at the nearest deadline: whoever's deadline that was (or has passed since) is
    // refused; the others go again.
    const now = Date.now();
    const nearest = Math.min(...open.map((i) => requests[i]!.deadline?.getTime() ?? Infinity));
    const late = new Set(open.filter((i) => (requests[i]!.deadline?.getTime() ?? Infinity) <= Math.max(now, nearest)));
    // Nobody's deadline to blame (a clock that moved back): every member is refused rather
    // than sent again and again.
    for (const i of late.size > 0 ? late : open) settle(i, failed(cancelledAtDeadline()));
    open = late.size > 0 ? open.filter((i) => !late.has(i)) : [];
  }
  for (const i of conflicts) settle(i, { ok: true, value: { kind: 'conflict' } });
}

function failed(error: unknown): Settled<AppendOutcome> {
  return { ok: false, error };
}

function outcomeOf(request: AppendRequest, row: AppendRow | undefined): AppendOutcome {
  if (row === undefined) return { kind: 'conflict' };
  const { decision } = request;
  const event: RecordedEvent = {
    position: row.position,
    evalId: decision.evalId,
    revision: decision.toRevision,
    recordedAt: request.recordedAt.toISOString(),
    event: decision.event,
  };
  const state = snapshotOf(row);
  return { kind: 'appended', event, ...(state !== undefined ? { state } : {}) };
}

/** One attempt at the batch: one transaction, one round trip. */
async function writeOnce(
  target: BatchTarget,
  members: readonly AppendRequest[],
  statements: readonly QueryConfig[],
): Promise<Attempt> {
  const bounds = members.map((m) => deadlineBound(m.deadline, target.sessionTimeoutMs) ?? Infinity);
  const nearest = Math.min(...bounds);
  const boundMs = Number.isFinite(nearest) ? Math.max(1, nearest) : undefined;
  const client = await target.connect();
  return holdingSession(client, async (session) => {
    // Every message's answer, in the order sent; member k's at memberAt[k].
    const sent: Promise<QueryResult>[] = [];
    const memberAt: number[] = [];
    // Every message is made before the first is sent: one that cannot be made (a tenant name
    // scopeTo refuses) must not leave the others in flight, unanswered.
    const timeout = boundMs === undefined ? '' : `; SET LOCAL statement_timeout = ${Math.ceil(boundMs)}`;
    const messages: (string | QueryConfig)[] = [
      `BEGIN${timeout}; SELECT 1 FROM event_log_head WHERE id = 1 FOR UPDATE`,
    ];
    let scope: string | undefined;
    members.forEach((member, k) => {
      if (member.tenant !== scope) {
        messages.push(scopeTo(member.tenant));
        scope = member.tenant;
      }
      memberAt[k] = messages.length;
      messages.push(statements[k]!);
    });
    messages.push('COMMIT');
    for (const message of messages) sent.push(session.query(message as QueryConfig));
    const answers = await Promise.allSettled(sent);
    const commit = answers[answers.length - 1]!;
    const committed = commit.status === 'fulfilled' && commit.value.command === 'COMMIT';
    const firstFailure = answers.findIndex((a) => a.status === 'rejected');
    if (firstFailure === -1 || committed) {
      // Committed. A statement pg refused before sending it (a value it could not serialise)
      // did not abort the transaction: its member alone failed, and the rest were written.
      const outcomes = memberAt.map((at): Settled<AppendRow | undefined> => {
        const answer = answers[at]!;
        return answer.status === 'fulfilled'
          ? { ok: true, value: (answer.value as QueryResult<AppendRow>).rows[0] }
          : { ok: false, error: answer.reason };
      });
      return { kind: 'committed', members: outcomes };
    }
    const err = (answers[firstFailure] as PromiseRejectedResult).reason as unknown;
    // Past the first failure PostgreSQL only refused the rest of the aborted transaction, and
    // its COMMIT rolled back: nothing was written, unless the failure left the outcome unknown.
    if (leavesOutcomeUnknown(err)) throw writeFailure(err, boundMs !== undefined);
    const member = memberAt.indexOf(firstFailure);
    if (member !== -1 && failsAlone(err)) {
      // A concurrent duplicate (same request id, or the same eval id inserted first by another
      // transaction) lost the race: its caller re-reads and answers as the winner did.
      const outcome: Settled<AppendOutcome> =
        uniqueViolation(err) !== undefined ? { ok: true, value: { kind: 'conflict' } } : failed(err);
      return { kind: 'member failed', index: member, outcome };
    }
    if (boundMs !== undefined && (err as { code?: unknown }).code === '57014') return { kind: 'deadline' };
    throw writeFailure(err, false);
  });
}

/**
 * Whether a statement's failure is its own command's: its row broke an integrity constraint
 * (class 23), held data PostgreSQL refused (class 22), or broke a row-level security policy
 * (42501). Anything else (lock waits, timeouts, outages) would fail any statement alike.
 */
function failsAlone(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('23') || code.startsWith('22') || code === '42501');
}

/** The statement_timeout a write needs for the call's deadline, when it is nearer than the session's own. */
function deadlineBound(deadline: Date | undefined, sessionTimeoutMs: number): number | undefined {
  if (deadline === undefined) return undefined;
  const left = deadline.getTime() - Date.now();
  return left < sessionTimeoutMs ? Math.ceil(left) : undefined;
}

/** What a failed write tells its callers: how much is known of what it did. */
export function writeFailure(err: unknown, boundedByDeadline: boolean): unknown {
  const cause = postgresUnavailableCause(err);
  if (leavesOutcomeUnknown(err)) {
    return new CommitOutcomeUnknownError(
      `the connection to PostgreSQL failed after the write was sent (${cause ?? 'the session ended'}); it may or may not have committed`,
      { cause: err },
    );
  }
  if (cause === undefined) return err;
  const code = (err as { code?: unknown }).code;
  if (boundedByDeadline && code === '57014') return cancelledAtDeadline(err);
  if (code === '55P03') {
    return new UnavailableError(
      "PostgreSQL: the write waited longer than lock_timeout for a lock another session holds (the event log's append lock, event_log_head, or this evaluation's row); nothing was written; retry with backoff",
      { cause: err },
    );
  }
  return new UnavailableError(`PostgreSQL refused the write: ${cause}; nothing was written; retry`, { cause: err });
}

function cancelledAtDeadline(cause?: unknown): UnavailableError {
  return new UnavailableError(
    "the write did not finish before the call's deadline (it waited for a lock, or PostgreSQL was slow) and PostgreSQL cancelled it; nothing was written",
    cause === undefined ? undefined : { cause },
  );
}
