import type { ResourceStack } from './processes';
import type { Progress } from './progress';

/** What every step of the tool is given (nothing is global). */
export interface StackContext {
  readonly progress: Progress;
  /** Whatever a step starts goes here, so that it is stopped again, newest first. */
  readonly resources: ResourceStack;
  /** The checkout the tool runs from; commands run here. */
  readonly projectRoot: string;
  /** Project-local, gitignored data of the servers started here (`.data/`). */
  readonly dataDir: string;
  /** Aborted on Ctrl-C / SIGTERM: long waits give up at once. */
  readonly signal: AbortSignal;
}
