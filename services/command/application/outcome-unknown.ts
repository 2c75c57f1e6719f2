import { CommitOutcomeUnknownError } from '../../../shared/errors';
import type { Command } from '../domain';

/**
 * What a caller hears when its command's write may or may not have committed and the service
 * could not read back which: that the outcome is unknown, and which retry learns it without
 * writing twice. A submit with neither request_id nor eval_id has no such retry (a retry gets a
 * new id), so the message names the id this one would have created, and says so.
 */
export function outcomeUnknown(command: Command, evalId: string, cause: unknown): CommitOutcomeUnknownError {
  const what =
    'the outcome is unknown: the connection to PostgreSQL failed after the write was sent, and reading it back failed too';
  let retry: string;
  if (command.requestId !== undefined) {
    retry = 'a retry with the same request_id is safe and answers what happened';
  } else if (command.type !== 'SubmitEvaluation' || command.evalId !== undefined) {
    retry = 'a retry of the same command (same eval_id) is safe and answers what happened';
  } else {
    retry =
      `if it was recorded, its eval_id is "${evalId}" (GetEvaluation tells); ` +
      'a retry without request_id or eval_id may create a duplicate evaluation: give submits a request_id';
  }
  return new CommitOutcomeUnknownError(`${command.type} of evaluation ${evalId}: ${what}; ${retry}`, { cause });
}
