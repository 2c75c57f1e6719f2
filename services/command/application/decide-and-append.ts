import type { RecordedEvent } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import type { Logger } from '../../../shared/logging';
import {
  decideChange,
  decideSubmit,
  type BodyLimits,
  type Command,
  type CommandResult,
  type Decision,
} from '../domain';
import { prepareCommand, type PreparedCommand } from './prepared-command';
import type { AppendRequest, BlobStore, Clock, EvaluationStore, EventPublisher, IdGenerator } from './ports';

// Each round lost to a concurrent writer re-reads and decides again; losing this many times
// in a row means a hot loop of writers on one evaluation, which no retry here would fix.
export const MAX_ROUNDS = 8;

/** What one load gives the decision: the evaluation, and the earlier command with the request id. */
export type Loaded = Awaited<ReturnType<EvaluationStore['load']>>;

type Append = Extract<Decision, { kind: 'append' }>;

export interface DecideAndAppendDeps {
  readonly store: EvaluationStore;
  readonly blobs: BlobStore;
  readonly publisher: EventPublisher;
  readonly clock: Clock;
  readonly newId: IdGenerator;
  readonly limits: BodyLimits;
  readonly logger: Logger;
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
 * publish.
 */
export async function decideAndAppend(
  deps: DecideAndAppendDeps,
  command: Command,
  write: WriteTracker = { maybeWritten: false },
): Promise<CommandResult> {
  const { store, blobs, clock, limits, logger } = deps;
  // A submit without an id gets one fresh id, so that every round retries the same id.
  const evalId = command.type === 'SubmitEvaluation' ? (command.evalId ?? deps.newId()) : command.evalId;
  // The first load goes out before the hashing below (tens of ms for a 16 MiB output), so
  // PostgreSQL answers while this process hashes. Rejections are awaited in round 1.
  let firstLoad: Promise<Loaded> | undefined = store.load(evalId, command.requestId);
  firstLoad.catch(() => undefined);
  const prepared = prepareCommand(command, limits);
  const { plan } = prepared;
  let uploaded = false;
  for (let round = 1; round <= MAX_ROUNDS; round += 1) {
    const now = clock.now();
    const loaded = await (firstLoad ?? store.load(evalId, command.requestId));
    firstLoad = undefined;
    const decision = decideCommand(command, evalId, prepared, now, loaded);
    if (decision.kind === 'unchanged') return decision.result;
    if (plan?.storage === 's3' && !uploaded) {
      // Uploaded before the append: if the write then fails, an unreferenced object is left
      // (same key on retry), never a reference to a missing object.
      await blobs.put(plan.key, plan.content, plan.digest);
      uploaded = true;
    }
    const request = appendRequestOf(command, decision, prepared, now);
    write.maybeWritten = true;
    const outcome = await store.append(request);
    if (outcome.kind === 'appended') {
      publishAfterCommit(deps, outcome.event);
      return answerOf(decision, outcome.event);
    }
    write.maybeWritten = false; // a conflict wrote nothing
    logger.debug('write conflict; deciding again', { evalId, round });
  }
  // Nothing was written: a client retrying (with backoff) is safe, so this is UNAVAILABLE,
  // not an internal error.
  throw new UnavailableError(
    `gave up on ${command.type} for ${evalId} after ${MAX_ROUNDS} conflicting rounds; retry with backoff`,
  );
}

/** The pure decision for one round, against what was just loaded. */
function decideCommand(
  command: Command,
  evalId: string,
  { hash, plan }: PreparedCommand,
  now: Date,
  { snapshot, priorRequest }: Loaded,
): Decision {
  const ctx = { now, commandHash: hash, ...(plan !== undefined ? { body: plan.ref } : {}) };
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
): AppendRequest {
  return {
    decision,
    commandHash: hash,
    recordedAt,
    ...(command.type === 'SubmitEvaluation' ? { code: command.code } : {}),
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
): void {
  deps.publisher.publish(event).catch((err: unknown) => {
    deps.logger.warn('publish failed; the query side will catch up from the event log', {
      position: event.position,
      err,
    });
  });
}
