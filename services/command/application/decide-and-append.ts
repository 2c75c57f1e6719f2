import type { Caller } from '../../../shared/auth';
import { DEFAULT_TENANT, type RecordedEvent } from '../../../shared/domain';
import {
  AlreadyExistsError,
  CommitOutcomeUnknownError,
  FailedPreconditionError,
  NotFoundError,
  UnavailableError,
} from '../../../shared/errors';
import type { Logger } from '../../../shared/logging';
import {
  decideChange,
  decideSubmit,
  type BodyLimits,
  type Command,
  type LogRules,
  type MetricRules,
  type CommandResult,
  type Decision,
  type EvaluationSnapshot,
} from '../domain';
import { outcomeUnknown } from './outcome-unknown';
import { prepareCommand, relocated, type PreparedCommand } from './prepared-command';
import type { RecentStates } from './recent-states';
import type {
  AppendOutcome,
  AppendRequest,
  BlobStore,
  Clock,
  EvaluationStore,
  EventPublisher,
  IdGenerator,
} from './ports';

// Each round lost to a concurrent writer re-reads and decides again; losing this many times
// in a row means a hot loop of writers on one evaluation, which no retry here would fix.
export const MAX_ROUNDS = 8;

/** What one load gives the decision: the evaluation, and the earlier command with the request id. */
export type Loaded = Awaited<ReturnType<EvaluationStore['load']>>;

/** A load that found neither: what a submit's first round guesses. */
const NOTHING_LOADED: Loaded = {};

type Append = Extract<Decision, { kind: 'append' }>;

export interface DecideAndAppendDeps {
  readonly store: EvaluationStore;
  readonly blobs: BlobStore;
  readonly publisher: EventPublisher;
  readonly clock: Clock;
  readonly newId: IdGenerator;
  readonly limits: BodyLimits & MetricRules & LogRules;
  /** What a command is first decided against when its evaluation was read or written here lately. */
  readonly recentStates: RecentStates;
  readonly logger: Logger;
}

/** The reporter of what the service decides itself (the reaper's failures, the blob mover's moves). */
export const SERVICE_REPORTER = 'crucible-storage';

/** What a command knows of the call that carries it (a handler passes its CallContext). */
export interface CommandCall {
  /** The call's deadline: the command's write does not commit after it. */
  readonly deadline?: Date | undefined;
  /** Fires when the caller goes away (a command still waiting for admission is then dropped). */
  readonly signal?: AbortSignal | undefined;
  /** Who sends it; undefined for the service's own commands. */
  readonly caller?: Caller | undefined;
  /**
   * The tenant a command of the service's own (no caller) acts in: the evaluation's. A caller
   * acts in its own tenant; with neither, DEFAULT_TENANT.
   */
  readonly tenant?: string | undefined;
  /** The call's span (a W3C traceparent): its change is announced with it (shared/tracing). */
  readonly traceparent?: string | undefined;
}

/** The tenant a command is decided and written in. */
export function tenantOfCall(call: CommandCall): string {
  return call.caller?.tenant ?? call.tenant ?? DEFAULT_TENANT;
}

/**
 * Whether a write may have committed: true from the moment an append is sent until it is known
 * to have written nothing (a conflict). Whoever must decide whether an upload is still referred
 * to reads it after the command settles.
 */
export interface WriteTracker {
  maybeWritten: boolean;
}

/**
 * load → decide → (upload) → append → publish, again after a conflict, at most MAX_ROUNDS times.
 * A large body is uploaded once, before the first append; the answer does not wait for the
 * publish. The append must not commit after `deadline` (the call's).
 *
 * A write whose outcome is unknown (its connection failed after it was sent) is read back once:
 * the next round's load shows it if it committed, and the decision then answers as for a
 * repeat; if it did not, the round writes it again (a write still in flight on the old session
 * holds the rows the new one needs, so the two cannot both commit). Only when that read or
 * write fails too does the caller hear that the outcome is unknown.
 */
export async function decideAndAppend(
  deps: DecideAndAppendDeps,
  command: Command,
  write: WriteTracker = { maybeWritten: false },
  call: CommandCall = {},
): Promise<CommandResult> {
  const { store, blobs, clock, limits, logger, recentStates } = deps;
  const tenant = tenantOfCall(call);
  // A submit without an id gets one fresh id, so that every round retries the same id.
  const evalId = command.type === 'SubmitEvaluation' ? (command.evalId ?? deps.newId()) : command.evalId;
  // The first round may decide against a guess instead of a load. The write of a decision
  // only succeeds when the guess was right: it inserts only if the id and the request id are
  // free, and updates only the revision it was decided at. When the guess was wrong the write
  // conflicts, and the next round loads and decides again; anything but a write (a refusal, a
  // repeat) is decided again against a load too. One round trip instead of two, for
  // - a submit whose code stays in PostgreSQL, guessed to find nothing there (a new evaluation,
  //   the common case);
  // - a command on an evaluation this instance read or wrote lately (RecentStates).
  const recent = command.type === 'SubmitEvaluation' ? undefined : recentStates.get(tenant, evalId);
  const guessed: Loaded | undefined =
    command.type === 'SubmitEvaluation'
      ? Buffer.byteLength(command.code, 'utf8') <= limits.inlineCodeMaxBytes
        ? NOTHING_LOADED
        : undefined
      : recentOf(recent);
  // The guess did not settle the command (the next round loads): a recent state's is counted.
  const guessUnconfirmed = (): void => {
    if (recent !== undefined) recentStates.reloaded(tenant, evalId);
  };
  // Otherwise the first load goes out before the hashing below (tens of ms for a 16 MiB
  // output), so PostgreSQL answers while this process hashes. Rejections are awaited in round 1.
  let firstLoad: Promise<Loaded> | undefined =
    guessed !== undefined ? Promise.resolve(guessed) : store.load(evalId, command.requestId, tenant);
  firstLoad.catch(() => undefined);
  let prepared = prepareCommand(command, evalId, limits);
  let unknown: CommitOutcomeUnknownError | undefined;
  // Whether the last load saw neither the evaluation nor the request id.
  let invisible = false;
  // After a write of unknown outcome, no failure may be reported as "nothing was written".
  const failure = (err: unknown): unknown => (unknown === undefined ? err : outcomeUnknown(command, evalId, err));
  const archivedError = (archivedAt: Date): FailedPreconditionError =>
    new FailedPreconditionError(
      evalId,
      'EVALUATION_ARCHIVED',
      `evaluation ${evalId} was archived at ${archivedAt.toISOString()} (ACTIVE_RETENTION) and takes no more commands`,
    );
  /** An evaluation not found may be one whose events left the log with its archive: say so. */
  async function archivedOr(err: unknown): Promise<unknown> {
    if (!(err instanceof NotFoundError) || command.type === 'SubmitEvaluation' || store.archivedAt === undefined)
      return err;
    const archivedAt = await store.archivedAt(evalId, tenant);
    return archivedAt === undefined ? err : archivedError(archivedAt);
  }
  for (let round = 1; round <= MAX_ROUNDS; round += 1) {
    const now = clock.now();
    const guess = round === 1 && guessed !== undefined;
    let loaded: Loaded;
    try {
      loaded = await (firstLoad ?? store.load(evalId, command.requestId, tenant));
    } catch (err) {
      throw failure(err);
    }
    firstLoad = undefined;
    if (!guess) {
      invisible = loaded.snapshot === undefined && loaded.priorRequest === undefined;
      recentStates.remember(tenant, evalId, loaded.snapshot);
    }
    let decision: Decision;
    try {
      decision = decideCommand(command, evalId, prepared, limits, now, loaded, call.caller, tenant);
    } catch (err) {
      if (guess) {
        guessUnconfirmed();
        continue;
      }
      throw failure(await archivedOr(err));
    }
    if (decision.kind === 'unchanged') {
      if (!guess) return decision.result;
      guessUnconfirmed();
      continue;
    }
    // Archived: a repeat of an earlier command is answered (above), nothing new is appended.
    const archivedAt = loaded.snapshot?.archivedAt;
    if (archivedAt !== undefined) throw failure(archivedError(archivedAt));
    const { plan } = prepared;
    if (plan?.storage === 's3') {
      // Uploaded before the append: if the write then fails, an unreferenced object is left
      // (same key on retry), never a reference to a missing object. Once uploaded the plan
      // says where it went (S3, or the fallback store), and later rounds do not upload again.
      const home = await blobs.put(plan.key, plan.content, plan.digest);
      prepared = relocated(prepared, home);
      if (home !== 's3') decision = decideCommand(command, evalId, prepared, limits, now, loaded, call.caller, tenant);
      if (decision.kind === 'unchanged') {
        if (!guess) return decision.result;
        guessUnconfirmed();
        continue;
      }
    }
    const request = appendRequestOf(command, decision, prepared, now, call, tenant);
    write.maybeWritten = true;
    let outcome: AppendOutcome;
    try {
      outcome = await store.append(request);
    } catch (err) {
      if (err instanceof CommitOutcomeUnknownError && unknown === undefined) {
        unknown = err;
        logger.warn('write outcome unknown; reading it back', { evalId, err });
        if (guess) guessUnconfirmed();
        continue;
      }
      throw failure(err);
    }
    if (outcome.kind === 'appended') {
      recentStates.remember(tenant, evalId, outcome.state);
      publishAfterCommit(deps, outcome.event, call.traceparent);
      return answerOf(decision, outcome.event);
    }
    // A conflict wrote nothing; but a write of unknown outcome before it may have.
    if (unknown === undefined) write.maybeWritten = false;
    if (guess) guessUnconfirmed();
    logger.debug('write conflict; deciding again', { evalId, round });
  }
  if (command.type === 'SubmitEvaluation' && invisible) {
    // Every round's write collided with an evaluation (or request id) that no load could see:
    // another tenant's (row-level security hides it). Saying that the id is taken tells no
    // more than a taken id of one's own would.
    throw failure(
      new AlreadyExistsError(
        command.requestId === undefined
          ? `evaluation ${evalId} already exists; choose another eval_id`
          : `evaluation ${evalId} (or request_id ${command.requestId}) is taken; choose another`,
      ),
    );
  }
  // Nothing was written: a client retrying (with backoff) is safe, so this is UNAVAILABLE,
  // not an internal error.
  throw failure(
    new UnavailableError(
      `gave up on ${command.type} for ${evalId} after ${MAX_ROUNDS} conflicting rounds; retry with backoff`,
    ),
  );
}

/** A recent state as the guess of a load (it knows nothing of request ids: a repeat is found by the load after). */
function recentOf(state: EvaluationSnapshot | undefined): Loaded | undefined {
  return state === undefined ? undefined : { snapshot: state };
}

/** The pure decision for one round, against what was just loaded. */
function decideCommand(
  command: Command,
  evalId: string,
  { hash, plan }: PreparedCommand,
  rules: MetricRules & LogRules,
  now: Date,
  { snapshot, priorRequest }: Loaded,
  caller: Caller | undefined,
  tenant: string,
): Decision {
  const ctx = {
    now,
    tenant,
    ...(caller !== undefined ? { caller } : {}),
    commandHash: hash,
    metricRules: rules,
    logRules: rules,
    ...(plan !== undefined ? { body: plan.ref } : {}),
  };
  return command.type === 'SubmitEvaluation'
    ? decideSubmit(command, evalId, snapshot, priorRequest, ctx)
    : decideChange(command, snapshot, priorRequest, ctx);
}

/** What the store needs to write a decision: the decision and what is recorded beside its event. */
function appendRequestOf(
  command: Command,
  decision: Append,
  { hash, body }: PreparedCommand,
  recordedAt: Date,
  { deadline, caller }: CommandCall,
  tenant: string,
): AppendRequest {
  return {
    decision,
    tenant,
    commandHash: hash,
    recordedAt,
    reporter: caller?.subject ?? SERVICE_REPORTER,
    ...(deadline !== undefined ? { deadline } : {}),
    ...(command.requestId !== undefined ? { requestId: command.requestId } : {}),
    ...(body !== undefined ? { body } : {}),
  };
}

/** The answer to a command that was appended: the new revision at the position the store gave it. */
function answerOf(decision: Append, event: RecordedEvent): CommandResult {
  return { evalId: decision.evalId, revision: decision.toRevision, position: event.position };
}

/**
 * Announces a committed event without waiting for it: a failure is logged, never thrown, since
 * the event is durable in PostgreSQL already and the query side catches up from the log.
 */
function publishAfterCommit(
  deps: Pick<DecideAndAppendDeps, 'publisher' | 'logger'>,
  event: RecordedEvent,
  traceparent: string | undefined,
): void {
  deps.publisher.publish(event, traceparent).catch((err: unknown) => {
    deps.logger.warn('publish failed; the query side will catch up from the event log', {
      position: event.position,
      err,
    });
  });
}
