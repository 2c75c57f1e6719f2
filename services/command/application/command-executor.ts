import type { Limits } from '../../../shared/config';
import type { Logger } from '../../../shared/logging';
import {
  checkBoundExecutor,
  UploadedOutput,
  type Command,
  type CommandResult,
  type CompletionHeader,
  type LogsTarget,
} from '../domain';
import { createAdmission, type AdmissionLimits, type AdmissionLoad } from './admission';
import type { RecentStates } from './recent-states';
import { decideAndAppend, tenantOfCall, type CommandCall, type WriteTracker } from './decide-and-append';

export type { CommandCall } from './decide-and-append';
import { appendLogs, type LogChunkIn, type LogsAppended } from './log-appender';
import type { BlobStore, Clock, EvaluationStore, EventPublisher, IdGenerator } from './ports';
import { completionOf, discardUpload, receiveOutput, uploadedOutputOf } from './streamed-output';

export interface CommandExecutorDeps {
  readonly store: EvaluationStore;
  readonly blobs: BlobStore;
  readonly publisher: EventPublisher;
  readonly clock: Clock;
  readonly newId: IdGenerator;
  readonly limits: Limits;
  /** The states of evaluations read or written lately: a command's first guess (recent-states.ts). */
  readonly recentStates: RecentStates;
  /** Commands in progress at once, and waiting past those, before more are refused (see createAdmission). */
  readonly admission: AdmissionLimits;
  readonly logger: Logger;
}

export interface CommandExecutor {
  /** Runs a validated command: load → decide → (upload) → write → publish. */
  execute(command: Command, call?: CommandCall): Promise<CommandResult>;
  /**
   * CompleteEvaluation whose output arrives as `output`, exactly `header.outputSize` bytes (the
   * caller checks the count and throws otherwise). Above the inline limit the bytes go to S3 as
   * they arrive, under a key of their own; the command is then decided as `execute` does, and
   * the object deleted if the command does not keep it.
   */
  completeStreamed(header: CompletionHeader, output: AsyncIterable<Buffer>, call?: CommandCall): Promise<CommandResult>;
  /**
   * Appends chunks to one of an evaluation's logs, in segments (see ./log-appender): each is a
   * command of its own, admitted and written as `execute` runs one; the call's wait for bytes
   * is not.
   */
  appendLogs(target: LogsTarget, chunks: AsyncIterable<LogChunkIn>, call?: CommandCall): Promise<LogsAppended>;
  /** Commands in progress and waiting, and those refused so far (./admission). */
  load(): AdmissionLoad;
}

/**
 * The command service's use cases, composed from parts that each stand alone: admission
 * (./admission), the decide-and-append rounds (./decide-and-append) and the intake of a
 * streamed output (./streamed-output).
 */
export function createCommandExecutor(deps: CommandExecutorDeps): CommandExecutor {
  const admission = createAdmission(deps.admission);
  const discard = (uploaded: UploadedOutput): Promise<void> => discardUpload(deps, uploaded);
  const run = (command: Command, call: CommandCall | undefined): Promise<CommandResult> =>
    runDiscardingUnkeptUpload(command, (write) => decideAndAppend(deps, command, write, call), discard);

  return {
    load: () => admission.load(),
    execute: (command, call) =>
      admission.admit(() => run(command, call), { deadline: call?.deadline, signal: call?.signal }),
    async completeStreamed(header, chunks, call) {
      // Another executor's bytes are not taken in at all (they would go to S3 before the
      // decision refused them): the binding is checked first, and again by the decision.
      if (call?.caller !== undefined && !call.caller.roles.has('admin')) {
        const { snapshot } = await deps.store.load(header.evalId, undefined, tenantOfCall(call));
        if (snapshot !== undefined) checkBoundExecutor(snapshot, call.caller);
      }
      // While its bytes arrive a streamed completion is not a command in progress: a slow
      // uploader must not make the service refuse other executors' commands. Its command is.
      const output = await receiveOutput(deps, header, chunks, tenantOfCall(call ?? {}));
      const command = completionOf(header, output);
      const uploaded = output instanceof UploadedOutput ? output : undefined;
      return admission.admit(() => run(command, call), {
        deadline: call?.deadline,
        signal: call?.signal,
        ...(uploaded !== undefined ? { beforeRefusal: () => discard(uploaded) } : {}),
      });
    },
    appendLogs(target, chunks, call) {
      const execute = (command: Command): Promise<CommandResult> =>
        admission.admit(() => run(command, call), { deadline: call?.deadline, signal: call?.signal });
      const appender = { store: deps.store, execute, limits: deps.limits, logger: deps.logger };
      return appendLogs(appender, target, chunks, tenantOfCall(call ?? {}));
    },
  };
}

/**
 * Runs the command through `write`; an output uploaded before it (a streamed completion) that
 * it turns out not to keep (refused, or a repeat answered as before) is deleted. Not after a
 * failed write: the write may have committed unseen, and then the object is referred to.
 */
async function runDiscardingUnkeptUpload(
  command: Command,
  write: (tracker: WriteTracker) => Promise<CommandResult>,
  discard: (uploaded: UploadedOutput) => Promise<void>,
): Promise<CommandResult> {
  const uploaded = uploadedOutputOf(command);
  const tracker: WriteTracker = { maybeWritten: false };
  if (uploaded === undefined) return write(tracker);
  try {
    return await write(tracker);
  } finally {
    // Awaited, so that when the caller hears the answer the object is gone.
    if (!tracker.maybeWritten) await discard(uploaded);
  }
}
