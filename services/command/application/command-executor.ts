import type { Limits } from '../../../shared/config';
import type { Logger } from '../../../shared/logging';
import {
  commandHash,
  decideChange,
  decideSubmit,
  planBody,
  type BodyPlan,
  type Command,
  type CommandResult,
  type Decision,
} from '../domain';
import type {
  AppendRequest,
  BlobStore,
  Clock,
  EvaluationStore,
  EventPublisher,
  IdGenerator,
  StoredBody,
} from './ports';

export interface CommandExecutorDeps {
  readonly store: EvaluationStore;
  readonly blobs: BlobStore;
  readonly publisher: EventPublisher;
  readonly clock: Clock;
  readonly newId: IdGenerator;
  readonly limits: Limits;
  readonly logger: Logger;
}

export interface CommandExecutor {
  /** Runs a validated command: load → decide → (upload) → write → publish. */
  execute(command: Command): Promise<CommandResult>;
}

// Each round lost to a concurrent writer re-reads and decides again; losing this many times
// in a row means a hot loop of writers on one evaluation, which no retry here would fix.
const MAX_ROUNDS = 8;

function planOf(command: Command, limits: Limits): BodyPlan | undefined {
  if (command.type === 'CompleteEvaluation') return planBody(command.evalId, 'output', command.output, limits);
  if (command.type === 'FailEvaluation') {
    return planBody(command.evalId, 'error', Buffer.from(command.error, 'utf8'), limits);
  }
  return undefined;
}

function storedBody(command: Command, plan: BodyPlan | undefined): StoredBody | undefined {
  if (plan === undefined || plan.storage === 'none') return undefined;
  const kind = command.type === 'FailEvaluation' ? 'error' : 'output';
  const size = plan.content.length;
  return plan.storage === 'postgres' ? { kind, size, content: plan.content } : { kind, size, s3Key: plan.key };
}

export function createCommandExecutor(deps: CommandExecutorDeps): CommandExecutor {
  const { store, blobs, publisher, clock, limits, logger } = deps;

  async function decide(
    command: Command,
    evalId: string,
    hash: string,
    plan: BodyPlan | undefined,
    now: Date,
  ): Promise<Decision> {
    const { snapshot, priorRequest } = await store.load(evalId, command.requestId);
    const ctx = { now, commandHash: hash, ...(plan !== undefined ? { body: plan.ref } : {}) };
    return command.type === 'SubmitEvaluation'
      ? decideSubmit(command, evalId, snapshot, priorRequest, ctx)
      : decideChange(command, snapshot, priorRequest, ctx);
  }

  return {
    async execute(command) {
      const hash = commandHash(command);
      const plan = planOf(command, limits);
      const body = storedBody(command, plan);
      // A submit without an id gets one fresh id, so that every round retries the same id.
      const evalId = command.type === 'SubmitEvaluation' ? (command.evalId ?? deps.newId()) : command.evalId;
      let uploaded = false;
      for (let round = 1; round <= MAX_ROUNDS; round += 1) {
        const now = clock.now();
        const decision = await decide(command, evalId, hash, plan, now);
        if (decision.kind === 'unchanged') return decision.result;
        if (plan?.storage === 's3' && !uploaded) {
          // Uploaded before the transaction: if the write then fails, an unreferenced object is
          // left (same key on retry), never a reference to a missing object.
          await blobs.put(plan.key, plan.content);
          uploaded = true;
        }
        const request: AppendRequest = {
          decision,
          commandHash: hash,
          recordedAt: now,
          ...(command.type === 'SubmitEvaluation' ? { code: command.code } : {}),
          ...(command.requestId !== undefined ? { requestId: command.requestId } : {}),
          ...(body !== undefined ? { body } : {}),
        };
        const outcome = await store.append(request);
        if (outcome.kind === 'appended') {
          publisher.publish(outcome.event).catch((err: unknown) => {
            // Durable in PostgreSQL already; the query side catches up from the log.
            logger.warn('publish failed; the query side will catch up from the event log', {
              position: outcome.event.position,
              err,
            });
          });
          return { evalId: decision.evalId, revision: decision.toRevision, position: outcome.event.position };
        }
        logger.debug('write conflict; deciding again', { evalId, round });
      }
      throw new Error(`gave up on ${command.type} for ${evalId} after ${MAX_ROUNDS} conflicting rounds`);
    },
  };
}
