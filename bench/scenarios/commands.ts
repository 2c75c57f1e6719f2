import { availableParallelism } from 'node:os';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { cpuPerUnit, measureCpu, sumCpu, type CpuGroup, type CpuUse } from '../support/cpu';
import { completeRequest, startRequest, submitRequest } from '../support/evaluations';
import { closeAll, createClients, unary } from '../support/grpc';
import { closedLoop, interleave, type LoadResult, type LoadTarget } from '../support/load';
import { loadFigures, type Row } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack } from '../support/stack';

const CONCURRENCY = [1, 16, 64];

type Op = (worker: number, iteration: number) => Promise<unknown>;

function submitOp(client: EvaluationCommandServiceClient): Op {
  return (worker, iteration) => unary(client, client.submitEvaluation, submitRequest(worker * 1_000_000 + iteration));
}

/**
 * Each worker drives its own evaluations through submit → start → complete, one command per
 * call (a run ends after any command, leaving a few evaluations queued or running).
 */
function lifecycleOp(client: EvaluationCommandServiceClient, concurrency: number): Op {
  const current: string[] = new Array<string>(concurrency).fill('');
  return async (worker, iteration) => {
    switch (iteration % 3) {
      case 0:
        current[worker] = (
          await unary(client, client.submitEvaluation, submitRequest(worker * 1_000_000 + iteration))
        ).evalId;
        return;
      case 1:
        return unary(client, client.startEvaluation, startRequest(current[worker]!));
      default:
        return unary(client, client.completeEvaluation, completeRequest(current[worker]!));
    }
  };
}

/**
 * Closed-loop run whose CPU is measured over its measured window only (after the warm-up, until
 * its end), so that it matches the commands counted in `ops`: commands that end after the
 * window neither count nor are charged. The measurement is added to `uses`.
 */
async function closedLoopWithCpu(
  options: Parameters<typeof closedLoop>[0],
  groups: readonly CpuGroup[],
  uses: CpuUse[],
): Promise<LoadResult> {
  let cpu: ReturnType<typeof measureCpu> | undefined;
  const from = setTimeout(() => (cpu = measureCpu(groups)), options.warmupMs);
  const to = setTimeout(() => {
    if (cpu !== undefined) uses.push(cpu.stop());
    cpu = undefined;
  }, options.warmupMs + options.durationMs);
  try {
    return await closedLoop(options);
  } finally {
    clearTimeout(from);
    clearTimeout(to);
  }
}

/**
 * One subject's CPU per command, e.g. `command service: service process 0.45, PostgreSQL 0.58,
 * bench client 0.26, whole machine 1.35 ms/cmd → 2 cores saturated at ~1,481 cmd/s`.
 */
function cpuPerCommand(name: string, uses: readonly CpuUse[], ops: number): string {
  const per = cpuPerUnit(sumCpu(uses), ops);
  const saturation = Math.round(per.saturationPerSecond).toLocaleString('en-US');
  return (
    `${name}: ${per.groups.map((g) => `${g.name} ${g.ms.toFixed(2)}`).join(', ')}, ` +
    `whole machine ${per.machineMs.toFixed(2)} ms/cmd → ${availableParallelism()} cores saturated at ~${saturation} cmd/s`
  );
}

export const commands: Scenario = {
  name: 'commands',
  description:
    'SubmitEvaluation, and whole lifecycles (submit, start, complete), at concurrency 1/16/64 beside a bare grpc-js service running the same SQL with pg',
  async run(ctx) {
    const stack = await createBenchStack(ctx);
    try {
      const service = await stack.start('command');
      const floor = await stack.startFloor('pg-commands');
      const [serviceClient, floorClient] = [
        ...createClients(EvaluationCommandServiceClient, service.address, 1),
        ...createClients(EvaluationCommandServiceClient, floor.address, 1),
      ];
      const rows: Row[] = [];
      const notes: string[] = [];
      const cpuGroups = (server: string, pid: number): CpuGroup[] => [
        { name: server, pids: [pid] },
        { name: 'PostgreSQL', comm: 'postgres' },
        { name: 'bench client', pids: [process.pid] },
      ];
      const subjects = {
        service: { name: 'command service', groups: cpuGroups('service process', service.pid) },
        floor: { name: 'bare grpc-js + pg, same SQL', groups: cpuGroups('floor server', floor.pid) },
      };
      const kinds = [
        { name: 'SubmitEvaluation', op: (client: EvaluationCommandServiceClient) => submitOp(client) },
        {
          name: 'lifecycle (submit, start, complete)',
          op: (client: EvaluationCommandServiceClient, c: number) => lifecycleOp(client, c),
        },
      ];
      for (const kind of kinds) {
        for (const concurrency of CONCURRENCY) {
          const cpu = new Map<string, CpuUse[]>();
          const target = (
            { name, groups }: { name: string; groups: CpuGroup[] },
            client: EvaluationCommandServiceClient,
          ): LoadTarget => {
            const uses: CpuUse[] = [];
            cpu.set(name, uses);
            return {
              name,
              run: () =>
                closedLoopWithCpu(
                  {
                    concurrency,
                    warmupMs: ctx.load.warmupMs,
                    durationMs: ctx.load.durationMs,
                    op: kind.op(client, concurrency),
                  },
                  groups,
                  uses,
                ),
            };
          };
          const results = await interleave(
            [target(subjects.service, serviceClient!), target(subjects.floor, floorClient!)],
            ctx.load.rounds,
            (name, round) =>
              ctx.progress(`commands: ${kind.name} c=${concurrency} round ${round + 1}/${ctx.load.rounds}: ${name}`),
          );
          const subject = results.get('command service')!;
          const bare = results.get('bare grpc-js + pg, same SQL')!;
          rows.push({
            scenario: kind.name,
            case: `c=${concurrency}`,
            subject: loadFigures('command service', subject, 'cmd/s'),
            floors: [loadFigures('bare grpc-js + pg, same SQL', bare, 'cmd/s')],
            ratio: subject.rate / bare.rate,
          });
          const perCommand = (s: { name: string }, result: LoadResult): string =>
            cpuPerCommand(s.name, cpu.get(s.name) ?? [], result.ops);
          notes.push(
            `CPU per command, ${kind.name} c=${concurrency} (measured windows of all rounds): ` +
              `${perCommand(subjects.service, subject)}; ${perCommand(subjects.floor, bare)}.`,
          );
        }
      }
      closeAll([serviceClient!, floorClient!]);
      const worst = rows.reduce((a, b) => ((b.ratio ?? Infinity) < (a.ratio ?? Infinity) ? b : a));
      return {
        rows,
        checks: [
          {
            target: 'Commands ≥ 0.7× the bare pg service at every concurrency',
            actual: `lowest ${worst.ratio?.toFixed(3)}× (${worst.scenario}, ${worst.case})`,
            met: rows.every((r) => (r.ratio ?? 0) >= 0.7),
          },
        ],
        notes: [
          `Commands: CPU per command is read from /proc over each round's measured window (after its warm-up) and summed over the rounds of each subject, divided by the commands that subject completed in those windows; "PostgreSQL" is every postgres process, "whole machine" everything busy on the machine (kernel included), and the saturation rate is ${availableParallelism()} cores ÷ that cost.`,
          ...notes,
        ],
      };
    } finally {
      await stack.close();
    }
  },
};
