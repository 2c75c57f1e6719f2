import { createHash } from 'node:crypto';
import { canTransition, type BodyRef, type EvaluationEvent, type Status } from '../../../shared/domain';
import {
  AlreadyExistsError,
  IllegalTransitionError,
  NotFoundError,
  RevisionConflictError,
} from '../../../shared/errors';
import type { Command, CommandResult, EvaluationCommand, SubmitEvaluation } from './commands';

/** An event already in the log, as far as deciding needs to know it. */
export interface LoggedCommand {
  readonly evalId: string;
  readonly revision: string;
  readonly position: string;
  readonly commandHash: string;
}

/** The write model's view of one evaluation. */
export interface EvaluationSnapshot {
  readonly evalId: string;
  readonly status: Status;
  readonly revision: string;
  /** The command that wrote revision 1. */
  readonly submitted: LoggedCommand;
  /** The command that wrote the current revision. */
  readonly latest: LoggedCommand;
}

export interface DecisionContext {
  readonly now: Date;
  /** Hash of the command's content (see commandHash). */
  readonly commandHash: string;
  /** Where the command's body (output or error) is kept; required for Complete and Fail. */
  readonly body?: BodyRef;
}

export type Decision =
  /** The command was already applied: answer as the first time, write nothing. */
  | { readonly kind: 'unchanged'; readonly result: CommandResult }
  | {
      readonly kind: 'append';
      readonly evalId: string;
      readonly event: EvaluationEvent;
      /** The revision the write must find (0: the evaluation must not exist). */
      readonly fromRevision: string;
      readonly toRevision: string;
      readonly status: Status;
    };

const TARGET_STATUS: Readonly<Record<EvaluationCommand['type'], Status>> = {
  StartEvaluation: 'running',
  CompleteEvaluation: 'completed',
  FailEvaluation: 'failed',
  CancelEvaluation: 'cancelled',
};

function resultOf(logged: LoggedCommand): CommandResult {
  return { evalId: logged.evalId, revision: logged.revision, position: logged.position };
}

function replayOfRequest(
  command: Command,
  prior: LoggedCommand | undefined,
  ctx: DecisionContext,
): CommandResult | undefined {
  if (prior === undefined) return undefined;
  if (prior.commandHash !== ctx.commandHash) {
    throw new AlreadyExistsError(
      `request_id "${command.requestId ?? ''}" was already used for a different command (on evaluation ${prior.evalId})`,
    );
  }
  return resultOf(prior);
}

function checkExpectedRevision(command: Command, evalId: string, current: string): void {
  if (command.expectedRevision !== undefined && command.expectedRevision !== current) {
    throw new RevisionConflictError(evalId, command.expectedRevision, current);
  }
}

/**
 * Decides what a submit does. `evalId` is the id to use (the client's, or a fresh one).
 * Pure: no I/O, no clock, no randomness beyond what the context carries.
 */
export function decideSubmit(
  command: SubmitEvaluation,
  evalId: string,
  existing: EvaluationSnapshot | undefined,
  priorRequest: LoggedCommand | undefined,
  ctx: DecisionContext,
): Decision {
  const replay = replayOfRequest(command, priorRequest, ctx);
  if (replay !== undefined) return { kind: 'unchanged', result: replay };
  if (existing !== undefined) {
    // A late retry of the original submit gets the original answer, whatever happened since.
    if (existing.submitted.commandHash === ctx.commandHash)
      return { kind: 'unchanged', result: resultOf(existing.submitted) };
    throw new AlreadyExistsError(`evaluation ${evalId} already exists with different content`);
  }
  checkExpectedRevision(command, evalId, '0');
  const code = Buffer.from(command.code, 'utf8');
  return {
    kind: 'append',
    evalId,
    fromRevision: '0',
    toRevision: '1',
    status: 'queued',
    event: {
      type: 'EvaluationQueued',
      data: {
        codeHash: createHash('sha256').update(code).digest('hex'),
        codeSize: code.length,
        language: command.language,
        engine: command.engine,
        timeoutSeconds: command.timeoutSeconds,
        metadata: command.metadata,
        createdAt: ctx.now.toISOString(),
      },
    },
  };
}

function eventOf(command: EvaluationCommand, ctx: DecisionContext): EvaluationEvent {
  const at = ctx.now.toISOString();
  switch (command.type) {
    case 'StartEvaluation':
      return {
        type: 'EvaluationStarted',
        data: { executorId: command.executorId, containerId: command.containerId, startedAt: at },
      };
    case 'CompleteEvaluation':
      if (ctx.body === undefined) throw new Error('CompleteEvaluation needs its body planned');
      return { type: 'EvaluationCompleted', data: { exitCode: command.exitCode, completedAt: at, output: ctx.body } };
    case 'FailEvaluation':
      if (ctx.body === undefined) throw new Error('FailEvaluation needs its body planned');
      return {
        type: 'EvaluationFailed',
        data: { exitCode: command.exitCode, reason: command.reason, completedAt: at, error: ctx.body },
      };
    case 'CancelEvaluation':
      return { type: 'EvaluationCancelled', data: { reason: command.reason, cancelledAt: at } };
    default: {
      const unreachable: never = command;
      throw new Error(`unknown command ${JSON.stringify(unreachable)}`);
    }
  }
}

/**
 * Decides what a command on an existing evaluation does: replay an earlier answer, append
 * one event, or refuse (NotFound, RevisionConflict, IllegalTransition, AlreadyExists).
 */
export function decideChange(
  command: EvaluationCommand,
  snapshot: EvaluationSnapshot | undefined,
  priorRequest: LoggedCommand | undefined,
  ctx: DecisionContext,
): Decision {
  const replay = replayOfRequest(command, priorRequest, ctx);
  if (replay !== undefined) return { kind: 'unchanged', result: replay };
  if (snapshot === undefined) throw new NotFoundError(`evaluation ${command.evalId} not found`);
  if (snapshot.latest.commandHash === ctx.commandHash) return { kind: 'unchanged', result: resultOf(snapshot.latest) };
  checkExpectedRevision(command, snapshot.evalId, snapshot.revision);
  const target = TARGET_STATUS[command.type];
  if (!canTransition(snapshot.status, target)) {
    throw new IllegalTransitionError(snapshot.evalId, snapshot.status, target);
  }
  return {
    kind: 'append',
    evalId: snapshot.evalId,
    fromRevision: snapshot.revision,
    toRevision: String(BigInt(snapshot.revision) + 1n),
    status: target,
    event: eventOf(command, ctx),
  };
}
