import { availableParallelism } from 'node:os';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { cpuPerUnit, measureCpu, sumCpu, type CpuGroup, type CpuUse } from '../support/cpu';
import { completeRequest, startRequest, submitRequest } from '../support/evaluations';
import { closeAll, createClients, unary } from '../support/grpc';
import { closedLoop, interleave, type LoadResult, type LoadTarget } from '../support/load';
import { runPgbench } from '../support/pgbench';
import { pgbenchSubmitScript } from '../support/plain-commands';
import { figure, loadFigures, type Check, type Measured, type Row } from '../support/report';
import type { BenchContext, Scenario } from '../support/scenario';
import { createBenchStack } from '../support/stack';

const CONCURRENCY = [1, 16, 64];

const SERVICE = 'command service';
const SAME_SQL = 'bare grpc-js + pg, same SQL';
const PLAIN = 'bare grpc-js + pg, plain transactions';
const PGBENCH = 'pgbench, the plain submit (limit)';

/** The issue's targets against the plain-transaction floor. */
const PLAIN_TARGETS = { concurrentRatio: 1.5, singleRatio: 0.9, singleP50GapMs: 0.3 } as const;

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
    // The run can end in the same turn as its window, before the `to` timer had its turn.
    if (cpu !== undefined) uses.push(cpu.stop());
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

/** pgbench's -T for the measured time: whole seconds, at least 1. */
const pgbenchSeconds = (ctx: BenchContext): number => Math.max(1, Math.round(ctx.load.durationMs / 1000));

/**
 * The limit line: pgbench running the plain floor's submit (its two statements in one
 * pipelined transaction) straight into PostgreSQL, as `concurrency` sessions, for the measured
 * time. Left out, with the reason, when pgbench is not installed or fails (PostgreSQL may be
 * short of sessions on a machine it is shared on): the gRPC rows stand without it.
 */
async function pgbenchSubmit(
  ctx: BenchContext,
  databaseUrl: string,
  concurrency: number,
): Promise<{ readonly measured: Measured } | { readonly leftOut: string }> {
  // A base per concurrency keeps each run's ids apart from the others' (one run per case).
  const { script, variables } = pgbenchSubmitScript(submitRequest(0), concurrency * 1e12);
  try {
    const result = await runPgbench({
      databaseUrl,
      script,
      variables,
      clients: concurrency,
      seconds: pgbenchSeconds(ctx),
      owner: ctx.processes,
    });
    if (result === undefined) return { leftOut: 'pgbench is not installed' };
    return { measured: { name: PGBENCH, figures: [figure('', result.tps, 'cmd/s')] } };
  } catch (err) {
    return { leftOut: err instanceof Error ? err.message.replace(/\n/g, ' ') : String(err) };
  }
}

/** One case's medians: the service and its two gRPC floors. */
interface Measurement {
  readonly kind: string;
  readonly concurrency: number;
  readonly service: LoadResult;
  readonly plain: LoadResult;
}

/**
 * The issue's targets against the plain-transaction floor, one check per case: under
 * concurrency the service should beat it clearly (it batches what the plain floor commits one
 * by one); alone, it should cost little more than it, in throughput and in p50.
 */
function plainChecks(measurements: readonly Measurement[]): Check[] {
  const rate = (r: LoadResult): string => Math.round(r.rate).toLocaleString('en-US');
  return measurements.flatMap(({ kind, concurrency, service, plain }): Check[] => {
    const ratio = service.rate / plain.rate;
    const rates = `${ratio.toFixed(3)}× (${rate(service)} vs ${rate(plain)} cmd/s)`;
    if (concurrency > 1) {
      const target = PLAIN_TARGETS.concurrentRatio;
      return [
        {
          target: `${kind} at c=${concurrency} ≥ ${target}× the plain-transaction floor`,
          actual: rates,
          met: ratio >= target,
        },
      ];
    }
    const gap = service.latency.p50Ms - plain.latency.p50Ms;
    const { singleRatio, singleP50GapMs } = PLAIN_TARGETS;
    return [
      {
        target: `${kind} at c=${concurrency} ≥ ${singleRatio}× the plain-transaction floor`,
        actual: rates,
        met: ratio >= singleRatio,
      },
      {
        target: `${kind} p50 at c=${concurrency} within ${singleP50GapMs} ms of the plain-transaction floor`,
        actual:
          `${gap >= 0 ? '+' : ''}${gap.toFixed(3)} ms ` +
          `(${service.latency.p50Ms.toFixed(3)} vs ${plain.latency.p50Ms.toFixed(3)} ms)`,
        met: gap <= singleP50GapMs,
      },
    ];
  });
}

export const commands: Scenario = {
  name: 'commands',
  description:
    'SubmitEvaluation, and whole lifecycles (submit, start, complete), at concurrency 1/16/64 beside bare grpc-js services with pg running the same SQL and plain transactions, and pgbench of the plain submit',
  async run(ctx) {
    const stack = await createBenchStack(ctx);
    try {
      const service = await stack.start('command');
      const sameSql = await stack.startFloor('pg-commands');
      // The plain floor and pgbench work on tables of their own, which the plain floor creates:
      // they connect as the database's owner, not as the service's login (stack.env).
      const ownerUrl = stack.environment.config.databaseUrl;
      const plain = await stack.startFloor('pg-plain-commands', { DATABASE_URL: ownerUrl });
      const notes: string[] = [];
      const subjects = [
        { name: SERVICE, role: 'service process', started: service },
        { name: SAME_SQL, role: 'floor server', started: sameSql },
        { name: PLAIN, role: 'floor server', started: plain },
      ].map(({ name, role, started }) => ({
        name,
        groups: [
          { name: role, pids: [started.pid] },
          { name: 'PostgreSQL', comm: 'postgres' },
          { name: 'bench client', pids: [process.pid] },
        ] satisfies CpuGroup[],
        client: createClients(EvaluationCommandServiceClient, started.address, 1)[0]!,
      }));
      const kinds = [
        {
          name: 'SubmitEvaluation',
          op: (client: EvaluationCommandServiceClient) => submitOp(client),
          // Its rows also get the pgbench line (below).
          withPgbench: true,
        },
        {
          name: 'lifecycle (submit, start, complete)',
          op: (client: EvaluationCommandServiceClient, c: number) => lifecycleOp(client, c),
          withPgbench: false,
        },
      ];
      const cases: { kind: (typeof kinds)[number]; concurrency: number; results: Map<string, LoadResult> }[] = [];
      for (const kind of kinds) {
        for (const concurrency of CONCURRENCY) {
          const cpu = new Map<string, CpuUse[]>();
          const target = ({ name, groups, client }: (typeof subjects)[number]): LoadTarget => {
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
          const results = await interleave(subjects.map(target), ctx.load.rounds, (name, round) =>
            ctx.progress(`commands: ${kind.name} c=${concurrency} round ${round + 1}/${ctx.load.rounds}: ${name}`),
          );
          cases.push({ kind, concurrency, results });
          const perCommand = ({ name }: { name: string }): string =>
            cpuPerCommand(name, cpu.get(name) ?? [], results.get(name)!.ops);
          notes.push(
            `CPU per command, ${kind.name} c=${concurrency} (measured windows of all rounds): ` +
              `${subjects.map(perCommand).join('; ')}.`,
          );
        }
      }
      closeAll(subjects.map((s) => s.client));
      // pgbench opens as many sessions as the concurrency: beside the pools the service and the
      // floors keep open (20 each once used at c=64), 64 more exceed PostgreSQL's default
      // max_connections (100). So it runs last, once they have stopped, which also keeps it
      // clear of every gRPC round.
      for (const p of [plain, sameSql, service]) await p.stop();
      const limits = new Map<number, Measured>();
      for (const concurrency of CONCURRENCY) {
        ctx.progress(`commands: SubmitEvaluation c=${concurrency}: ${PGBENCH}`);
        const limit = await pgbenchSubmit(ctx, ownerUrl, concurrency);
        if ('leftOut' in limit) notes.push(`SubmitEvaluation c=${concurrency}: no pgbench line: ${limit.leftOut}`);
        else limits.set(concurrency, limit.measured);
      }
      const rows: Row[] = cases.map(({ kind, concurrency, results }) => {
        const measured = (name: string): LoadResult => results.get(name)!;
        const limit = kind.withPgbench ? limits.get(concurrency) : undefined;
        return {
          scenario: kind.name,
          case: `c=${concurrency}`,
          subject: loadFigures(SERVICE, measured(SERVICE), 'cmd/s'),
          floors: [
            loadFigures(SAME_SQL, measured(SAME_SQL), 'cmd/s'),
            loadFigures(PLAIN, measured(PLAIN), 'cmd/s'),
            ...(limit === undefined ? [] : [limit]),
          ],
          // The ratio keeps its meaning: to the first floor, the same SQL. The plain floor's
          // ratios are in the checks.
          ratio: measured(SERVICE).rate / measured(SAME_SQL).rate,
        };
      });
      const measurements = cases.map(({ kind, concurrency, results }) => ({
        kind: kind.name,
        concurrency,
        service: results.get(SERVICE)!,
        plain: results.get(PLAIN)!,
      }));
      const worst = rows.reduce((a, b) => ((b.ratio ?? Infinity) < (a.ratio ?? Infinity) ? b : a));
      return {
        rows,
        checks: [
          {
            target: 'Commands ≥ 0.7× the bare pg service at every concurrency',
            actual: `lowest ${worst.ratio?.toFixed(3)}× (${worst.scenario}, ${worst.case})`,
            met: rows.every((r) => (r.ratio ?? 0) >= 0.7),
          },
          ...plainChecks(measurements),
        ],
        notes: [
          `Commands: the ratio is to the first floor, the same SQL; the checks name the plain-transaction floor's. "${PLAIN}" (bench/floors/pg-plain-commands.ts) is what a user would write instead of the service: one transaction per command (BEGIN, the evaluation's INSERT or guarded UPDATE, its event's INSERT, COMMIT, sent in one round trip) on two tables of its own, with no global order. "${PGBENCH}" is pgbench running that floor's submit statements (bench/support/plain-commands.ts, one pipelined transaction, -M prepared, as many sessions as the concurrency, 2 threads) straight into PostgreSQL for ${pgbenchSeconds(ctx)} s per concurrency, after every gRPC round, once the service and the floors have stopped: its tps without connection time, no latency. It runs for SubmitEvaluation only: a lifecycle's start and complete need the id its own submit made, which a pgbench script could only carry from one transaction to the next with an extra round trip (\\gset), so it would no longer be the same write.`,
          `Commands: CPU per command is read from /proc over each round's measured window (after its warm-up) and summed over the rounds of each subject, divided by the commands that subject completed in those windows; "PostgreSQL" is every postgres process, "whole machine" everything busy on the machine (kernel included), and the saturation rate is ${availableParallelism()} cores ÷ that cost.`,
          ...notes,
        ],
      };
    } finally {
      await stack.close();
    }
  },
};
