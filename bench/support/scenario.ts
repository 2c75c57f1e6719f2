import type { ChildGroup } from '../../tools/process';
import type { ScenarioResult } from './report';

/** What every scenario is given by the runner. */
export interface BenchContext {
  /** Tiny sizes and durations: checks that every scenario still runs (CI). */
  readonly smoke: boolean;
  /** Endpoint of the bench's own s3rver. */
  readonly s3Endpoint: string;
  /** Its process, for CPU accounting. */
  readonly s3Pid: number;
  /** Every process the run starts is adopted here (stopped all at once on Ctrl-C). */
  readonly processes: ChildGroup;
  /** Node flags for service processes and their CLIs (--cpu-prof with --profile). */
  readonly serviceNodeArgs: readonly string[];
  /** Closed-loop load runs: warm-up, measured time, and rounds alternating service and floor. */
  readonly load: { readonly warmupMs: number; readonly durationMs: number; readonly rounds: number };
  progress(message: string): void;
}

/** One row group of the table (bench/scenarios/<name>.ts), its floors measured beside it. */
export interface Scenario {
  readonly name: string;
  /** One line: what is measured, against which floor. */
  readonly description: string;
  run(ctx: BenchContext): Promise<ScenarioResult>;
}
