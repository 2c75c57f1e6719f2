import { call } from './clients';
import { FailureReason, Severity, ViolationType } from '../../shared/generated/crucible/storage/v1/evaluation';
import type { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';

/**
 * Evaluations' lives as plans of commands, and one command of such a life sent to the command
 * service: what the bursts of the fault, cluster and e2e specs are made of.
 */

/** `metrics` and `violation` record without moving the status (RecordMetrics, RecordSecurityEvent). */
export type Step = 'submit' | 'start' | 'complete' | 'fail' | 'cancel' | 'metrics' | 'violation';

/** One evaluation's life as a list of commands, run in order. */
export interface Plan {
  readonly evalId: string;
  readonly steps: readonly Step[];
}

/** The event each step leaves in the log. */
export const LOGGED_AS: Readonly<Record<Step, string>> = {
  submit: 'EvaluationQueued',
  start: 'EvaluationStarted',
  complete: 'EvaluationCompleted',
  fail: 'EvaluationFailed',
  cancel: 'EvaluationCancelled',
  metrics: 'EvaluationMetricsRecorded',
  violation: 'EvaluationSecurityViolation',
};

/** Four lives, with metrics and a security event recorded on the way: what plansFor cycles through unless told. */
export const LIFE_SHAPES: readonly (readonly Step[])[] = [
  ['submit', 'start', 'metrics', 'complete'],
  ['submit', 'start', 'violation', 'fail'],
  ['submit', 'cancel'],
  ['submit', 'metrics', 'start', 'cancel'],
];

/** Languages and executors the plans spread over, so that the facet indexes and queue counts move too. */
const LANGUAGES = ['python', 'go', 'rust'];
const spread = <T>(evalId: string, values: readonly T[]): T => {
  let hash = 0;
  for (const c of evalId) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return values[hash % values.length] as T;
};

/**
 * Plans for evaluations `<prefix>-0`, `<prefix>-1` …, cycling through `shapes`, with `commands`
 * commands in all (the last life cut short where the count ends).
 */
export function plansFor(prefix: string, commands: number, shapes: readonly (readonly Step[])[] = LIFE_SHAPES): Plan[] {
  const plans: Plan[] = [];
  for (let total = 0, i = 0; total < commands; i += 1) {
    const shape = shapes[i % shapes.length] ?? shapes[0] ?? [];
    const steps = shape.slice(0, Math.min(shape.length, commands - total));
    plans.push({ evalId: `${prefix}-${i}`, steps });
    total += steps.length;
  }
  return plans;
}

export interface CommandResult {
  readonly evalId: string;
  readonly revision: string;
  readonly position: string;
}

export interface StepOptions {
  readonly requestId?: string;
  readonly metadata?: Record<string, unknown>;
  readonly deadlineMs?: number;
}

/** Runs one command of an evaluation's life through the command service. */
export function runStep(
  command: EvaluationCommandServiceClient,
  evalId: string,
  step: Step,
  options: StepOptions = {},
): Promise<CommandResult> {
  const requestId = options.requestId ?? '';
  const deadline = options.deadlineMs ?? 15_000;
  switch (step) {
    case 'submit':
      return call(
        command,
        command.submitEvaluation,
        {
          evalId,
          code: `print(${JSON.stringify(evalId)})`,
          language: spread(evalId, LANGUAGES),
          engine: 'docker',
          timeoutSeconds: 60,
          metadata: options.metadata ?? { suite: 'fault' },
          requestId,
        },
        deadline,
      );
    case 'start':
      return call(
        command,
        command.startEvaluation,
        { evalId, executorId: spread(evalId, ['executor-1', 'executor-2']), containerId: `c-${evalId}`, requestId },
        deadline,
      );
    case 'complete':
      return call(
        command,
        command.completeEvaluation,
        { evalId, output: Buffer.from(`${evalId} done\n`), exitCode: 0, requestId },
        deadline,
      );
    case 'fail':
      return call(
        command,
        command.failEvaluation,
        { evalId, error: `${evalId} broke`, exitCode: 3, reason: FailureReason.FAILURE_REASON_ERROR, requestId },
        deadline,
      );
    case 'cancel':
      return call(command, command.cancelEvaluation, { evalId, reason: 'fault test', requestId }, deadline);
    case 'metrics':
      return call(
        command,
        command.recordMetrics,
        {
          evalId,
          metrics: [
            { name: 'loss', value: 0.5, unit: '', step: '1' },
            { name: 'loss', value: 0.25, unit: '', step: '2' },
            { name: 'eval/accuracy', value: 0.75, unit: '%' },
          ],
          requestId,
        },
        deadline,
      );
    case 'violation':
      return call(
        command,
        command.recordSecurityEvent,
        {
          resourceViolation: {
            evalId,
            containerId: `c-${evalId}`,
            violationType: ViolationType.VIOLATION_TYPE_MEMORY,
            details: { observedBytes: 1024 },
            actionTaken: 'logged',
            severity: Severity.SEVERITY_LOW,
          },
          requestId,
        },
        deadline,
      );
    default: {
      const unreachable: never = step;
      throw new Error(`unknown step ${String(unreachable)}`);
    }
  }
}
