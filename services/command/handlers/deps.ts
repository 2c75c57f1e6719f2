import type { Limits } from '../../../shared/config';
import type { CommandExecutor } from '../application/command-executor';

/** What every command handler needs: validate with the limits, then run the command. */
export interface CommandHandlerDeps {
  readonly executor: CommandExecutor;
  readonly limits: Limits;
}
