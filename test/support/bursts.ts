import { setTimeout as sleep } from 'node:timers/promises';
import { status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import type { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { LOGGED_AS, runStep, type CommandResult, type Plan, type Step } from './commands';
import { describeLogged, expectDense, type LoggedEvent } from './event-log';

/**
 * Bursts of commands: many evaluations' lives run at once, each life's commands in order, and
 * what the command service answered checked against the event log afterwards.
 */

/**
 * Runs the plans `concurrency` at a time: each worker takes the next plan and runs its steps in
 * order with `runOne`, which answers false when the plan cannot go on (its later steps would be
 * illegal after a failed one). Resolves when every plan ran.
 */
export async function runPlans(
  plans: readonly Plan[],
  concurrency: number,
  runOne: (plan: Plan, step: Step) => Promise<boolean>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let plan = plans[next++]; plan !== undefined; plan = plans[next++]) {
      for (const step of plan.steps) if (!(await runOne(plan, step))) break;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, () => worker()));
}

/** A command's answer, as the burst saw it. */
export interface Ack {
  readonly evalId: string;
  readonly step: Step;
  readonly revision: bigint;
  readonly position: bigint;
  /** When the command was first sent, and when its answer arrived (performance.now()). */
  readonly sentAt: number;
  readonly ackedAt: number;
}

export interface AckedBurst {
  readonly acks: readonly Ack[];
  readonly failures: readonly string[];
  /** Commands sent again, by the status that made them. */
  readonly retries: Readonly<Record<string, number>>;
  /** Resolves once `count` commands were acknowledged, or the burst ended. */
  whenAcked(count: number): Promise<void>;
  readonly done: Promise<void>;
}

export interface AckedBurstOptions {
  /** Plans run at the same time. */
  readonly concurrency: number;
  /**
   * Statuses after which a command is sent again, with the same request id (so that it is
   * idempotent), up to `attempts` times in all; none by default: any failure is recorded and
   * ends its plan.
   */
  readonly retry?: { readonly on: readonly status[]; readonly attempts: number };
  /** Each call's deadline (runStep's default unless told). */
  readonly deadlineMs?: number;
  readonly metadata?: Record<string, unknown>;
  /** Called with each acknowledgement as it arrives (to read it back meanwhile, say). */
  readonly onAck?: (ack: Ack) => void;
}

/**
 * Runs the plans, each command with a request id of its own (`<evalId>:<step>`), and records
 * every acknowledgement with the position and revision it named, for expectBurstInLog.
 */
export function startAckedBurst(
  command: EvaluationCommandServiceClient,
  plans: readonly Plan[],
  options: AckedBurstOptions,
): AckedBurst {
  const acks: Ack[] = [];
  const failures: string[] = [];
  const retries: Record<string, number> = {};
  const retryOn = new Set<number>(options.retry?.on ?? []);
  const attempts = options.retry?.attempts ?? 1;
  const waiters: { count: number; resolve: () => void }[] = [];
  let finished = false;
  const notify = (): void => {
    for (const waiter of [...waiters]) {
      if (!finished && acks.length < waiter.count) continue;
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
  };
  const runOne = async (plan: Plan, step: Step): Promise<boolean> => {
    const stepOptions = {
      requestId: `${plan.evalId}:${step}`,
      ...(options.deadlineMs !== undefined ? { deadlineMs: options.deadlineMs } : {}),
      ...(options.metadata !== undefined ? { metadata: options.metadata } : {}),
    };
    const sentAt = performance.now();
    let answer: CommandResult | undefined;
    for (let attempt = 1; answer === undefined; attempt += 1) {
      try {
        answer = await runStep(command, plan.evalId, step, stepOptions);
      } catch (err) {
        const e = err as ServiceError;
        const code = status[e.code] ?? String(e.code);
        if (!retryOn.has(e.code) || attempt >= attempts) {
          failures.push(`${step} ${plan.evalId} (attempt ${attempt}): ${code} ${e.details}`);
          return false;
        }
        retries[code] = (retries[code] ?? 0) + 1;
        // Back off (a retry, not a wait for something): the service said it cannot now.
        await sleep(Math.min(500, 25 * attempt));
      }
    }
    const ack = {
      evalId: answer.evalId,
      step,
      revision: BigInt(answer.revision),
      position: BigInt(answer.position),
      sentAt,
      ackedAt: performance.now(),
    };
    acks.push(ack);
    options.onAck?.(ack);
    notify();
    return true;
  };
  const done = runPlans(plans, options.concurrency, runOne).then(() => {
    finished = true;
    notify();
  });
  return {
    acks,
    failures,
    retries,
    whenAcked(count) {
      if (finished || acks.length >= count) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ count, resolve }));
    },
    done,
  };
}

/**
 * What a burst left in the log: every command of the plans acknowledged, each at the position
 * and revision its answer named, with its event type (no command lost, none written twice,
 * whichever instance took it or however often it was sent); each evaluation's events in
 * lifecycle order and no other; positions 1..N; and positions in commit order: a command sent
 * after another was answered has a higher position.
 */
export function expectBurstInLog(burst: AckedBurst, plans: readonly Plan[], log: readonly LoggedEvent[]): void {
  expect(burst.failures, burst.failures.slice(0, 10).join('\n')).to.deep.equal([]);
  const commands = plans.reduce((n, p) => n + p.steps.length, 0);
  expect(burst.acks.length, 'acknowledged commands').to.equal(commands);
  expectDense(log);

  const byPosition = new Map(log.map((e) => [e.position, e]));
  for (const ack of burst.acks) {
    const logged = byPosition.get(ack.position);
    expect(logged && describeLogged(logged), `${ack.step} of ${ack.evalId}, acknowledged at ${ack.position}`).to.equal(
      `${ack.position} ${ack.evalId}@${ack.revision} ${LOGGED_AS[ack.step]}`,
    );
  }

  const planned = new Set(plans.map((p) => p.evalId));
  const events = new Map<string, LoggedEvent[]>();
  for (const e of log) if (planned.has(e.evalId)) events.set(e.evalId, [...(events.get(e.evalId) ?? []), e]);
  expect([...events.values()].flat().length, "the burst's events in the log").to.equal(commands);
  for (const plan of plans) {
    expect(
      (events.get(plan.evalId) ?? []).map((e) => `${e.revision} ${e.eventType}`),
      `${plan.evalId}: its events in position order`,
    ).to.deep.equal(plan.steps.map((step, i) => `${i + 1} ${LOGGED_AS[step]}`));
  }

  // For each command, every command answered before it was first sent has a lower position.
  const byAck = [...burst.acks].sort((a, b) => a.ackedAt - b.ackedAt);
  const highestBefore: bigint[] = [];
  for (const [i, ack] of byAck.entries())
    highestBefore[i] = ack.position > (highestBefore[i - 1] ?? 0n) ? ack.position : (highestBefore[i - 1] ?? 0n);
  for (const ack of burst.acks) {
    let lo = 0;
    let hi = byAck.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((byAck[mid]?.ackedAt ?? Infinity) < ack.sentAt) lo = mid + 1;
      else hi = mid;
    }
    const highest = lo === 0 ? 0n : (highestBefore[lo - 1] ?? 0n);
    expect(
      highest < ack.position,
      `${ack.step} of ${ack.evalId} at ${ack.position}, sent after position ${highest} was answered`,
    ).to.equal(true);
  }
}
