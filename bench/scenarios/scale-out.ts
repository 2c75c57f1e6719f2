import { join } from 'node:path';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { loadConfig } from '../../shared/config';
import { createPool } from '../../shared/postgres';
import { createResourceStack } from '../../tools/stack/processes';
import { createProgress } from '../../tools/stack/progress';
import { ensureRedisCluster } from '../../tools/stack/redis-cluster';
import { cpuPerUnit, measureCpu, sumCpu, type CpuUse } from '../support/cpu';
import { submitRequest } from '../support/evaluations';
import { generatedEvaluation, generateEventLog } from '../support/event-log';
import { closeAll, createClients, SETUP_DEADLINE_MS, unary } from '../support/grpc';
import { closedLoop, interleave, openLoop, withWatchdog, type LoadResult, type LoadTarget } from '../support/load';
import type { ListeningProcess } from '../support/processes';
import { runToCompletion } from '../support/processes';
import { figure, loadFigures, type Check, type Row } from '../support/report';
import type { BenchContext, Scenario } from '../support/scenario';
import { createBenchStack, PROJECT_ROOT, type BenchStack } from '../support/stack';
import { median, createLatencyRecorder, type LatencySummary } from '../support/stats';
import { watchPositions } from '../support/watch-positions';

/** The bench's own local cluster (three primaries, three replicas), apart from the test suite's. */
const CLUSTER_NODES = '127.0.0.1:7011,127.0.0.1:7012,127.0.0.1:7013,127.0.0.1:7014,127.0.0.1:7015,127.0.0.1:7016';
/** Both sides run with the partitions a cluster needs to spread (docs/scaling.md). */
const PARTITIONS = '16';
const LOOKUP_CONCURRENCY = 16;
const REPLICA_CONCURRENCY = 64;
const PROPAGATION_RATE = 200;

/** Starts the local cluster (unless it answers already); `stop` stops what was started. */
async function startCluster(ctx: BenchContext): Promise<{ stop(): Promise<void> }> {
  const config = loadConfig({ ...process.env, ENVIRONMENT: 'test', REDIS_CLUSTER_NODES: CLUSTER_NODES });
  const progress = createProgress((line) => ctx.progress(`scale-out: ${line.trimEnd()}`));
  const resources = createResourceStack();
  await ensureRedisCluster(config.redisUrl, config.redisClusterNodes, {
    progress,
    resources,
    projectRoot: PROJECT_ROOT,
    dataDir: join(PROJECT_ROOT, '.data', 'bench'),
    signal: new AbortController().signal,
  });
  return { stop: () => resources.stopAll(progress) };
}

/** One side of the comparison: its stack with an event log in PostgreSQL, rebuilt and served. */
interface Side {
  readonly name: string;
  readonly stack: BenchStack;
  readonly events: number;
  query?: ListeningProcess;
  command?: ListeningProcess;
}

async function rebuildSeconds(ctx: BenchContext, side: Side): Promise<number> {
  const { seconds } = await runToCompletion({
    name: `rebuild CLI (${side.name})`,
    script: join(PROJECT_ROOT, 'dist', 'services', 'query', 'cli', 'rebuild.js'),
    env: side.stack.env,
    nodeArgs: ctx.serviceNodeArgs,
    owner: ctx.processes,
  });
  return seconds;
}

/** Update propagation, open loop: acknowledgement → WatchEvaluations update, per side. */
async function propagationOf(ctx: BenchContext, side: Side): Promise<LatencySummary> {
  const [commandClient] = createClients(EvaluationCommandServiceClient, side.command!.address, 1);
  const [queryClient] = createClients(EvaluationQueryServiceClient, side.query!.address, 1);
  try {
    const { position } = await unary(
      commandClient!,
      commandClient!.submitEvaluation,
      submitRequest(0),
      SETUP_DEADLINE_MS,
    );
    const stream = queryClient!.watchEvaluations({ afterPosition: position, statuses: [], evalIds: [] });
    stream.on('error', () => undefined); // cancelled below
    const watcher = watchPositions(stream);
    await withWatchdog(watcher.caughtUp, SETUP_DEADLINE_MS, 'WatchEvaluations caught-up marker');
    const latency = createLatencyRecorder();
    const offered = await openLoop({
      ratePerSecond: PROPAGATION_RATE,
      durationMs: ctx.load.durationMs,
      drainMs: 60_000,
      op: async (n) => {
        const { position: at } = await unary(commandClient!, commandClient!.submitEvaluation, submitRequest(n + 1));
        const acknowledged = process.hrtime.bigint();
        latency.recordNs(Math.max(0, Number((await watcher.arrival(at)) - acknowledged)));
      },
    });
    stream.cancel();
    if (offered.firstError !== undefined) throw new Error(`${side.name}: a command failed: ${offered.firstError}`);
    return latency.summary();
  } finally {
    closeAll([commandClient!, queryClient!]);
  }
}

const ratioCheck = (target: string, ratio: number, floor: number, detail: string): Check => ({
  target,
  actual: `${ratio.toFixed(2)}× (${detail})`,
  met: ratio >= floor,
});

export const scaleOut: Scenario = {
  name: 'scale-out',
  description:
    'one Redis vs a local Redis Cluster (3 primaries + 3 replicas), same run: GetEvaluation, propagation p99 and rebuild; then GetEvaluation with 1, 2 and 3 query replicas behind a round-robin client, with CPU per lookup',
  async run(ctx) {
    const cluster = await startCluster(ctx);
    const sides: Side[] = [];
    try {
      const evaluations = ctx.smoke ? 200 : 20_000;
      for (const [name, overrides] of [
        ['one Redis', { READ_MODEL_PARTITIONS: PARTITIONS }],
        ['Redis Cluster', { READ_MODEL_PARTITIONS: PARTITIONS, REDIS_CLUSTER_NODES: CLUSTER_NODES }],
      ] as const) {
        const stack = await createBenchStack(ctx, overrides);
        const pool = createPool({ url: stack.environment.config.databaseUrl, poolSize: 2, applicationName: 'bench' });
        try {
          ctx.progress(`scale-out: ${name}: writing ${evaluations * 2} events into PostgreSQL`);
          sides.push({ name, stack, events: await generateEventLog(pool, evaluations) });
        } finally {
          await pool.end();
        }
      }
      const [single, clustered] = sides as [Side, Side];

      // Rebuilds, alternating sides, each from empty read models (the CLI deletes them first).
      const rebuilds = new Map<string, number[]>(sides.map((s) => [s.name, []]));
      for (let round = 0; round < ctx.load.rounds; round++) {
        for (const side of sides) {
          ctx.progress(`scale-out: rebuild round ${round + 1}/${ctx.load.rounds}: ${side.name}`);
          rebuilds.get(side.name)!.push(await rebuildSeconds(ctx, side));
        }
      }
      for (const side of sides) {
        side.query = await side.stack.start('query');
        side.command = await side.stack.start('command');
        const [client] = createClients(EvaluationQueryServiceClient, side.query.address, 1);
        const { checkpoint } = await unary(client!, client!.getProjectionStatus, {}, SETUP_DEADLINE_MS);
        client!.close();
        if (checkpoint !== String(side.events))
          throw new Error(`${side.name}: after the rebuild the checkpoint is ${checkpoint}, not ${side.events}`);
      }

      // Lookups of random generated evaluations, both sides in alternating rounds.
      const lookupClients = sides.map(
        (side) => createClients(EvaluationQueryServiceClient, side.query!.address, 1)[0]!,
      );
      const idOf = (worker: number, iteration: number): string =>
        generatedEvaluation(1 + ((worker * 7919 + iteration * 104_729) % evaluations)).evalId;
      const lookups = await interleave(
        sides.map((side, s): LoadTarget => ({
          name: side.name,
          run: () =>
            closedLoop({
              concurrency: LOOKUP_CONCURRENCY,
              warmupMs: ctx.load.warmupMs,
              durationMs: ctx.load.durationMs,
              op: (w, i) => unary(lookupClients[s]!, lookupClients[s]!.getEvaluation, { evalId: idOf(w, i) }),
            }),
        })),
        ctx.load.rounds,
        (name, round) => ctx.progress(`scale-out: GetEvaluation c=${LOOKUP_CONCURRENCY} round ${round + 1}: ${name}`),
      );
      closeAll(lookupClients);

      const propagation = new Map<string, LatencySummary[]>(sides.map((s) => [s.name, []]));
      for (let round = 0; round < ctx.load.rounds; round++) {
        for (const side of sides) {
          ctx.progress(`scale-out: propagation at ${PROPAGATION_RATE}/s round ${round + 1}: ${side.name}`);
          propagation.get(side.name)!.push(await propagationOf(ctx, side));
        }
      }

      // Reads with 1, 2 and 3 query replicas on one Redis, a round-robin client over them.
      const replicas = [single.query!, await single.stack.start('query'), await single.stack.start('query')];
      // The new replicas warmed up first, as the first one was by the lookups above (JIT, connections).
      for (const replica of replicas.slice(1)) {
        const [client] = createClients(EvaluationQueryServiceClient, replica.address, 1);
        ctx.progress(`scale-out: warming up the query replica on ${replica.address}`);
        await closedLoop({
          concurrency: LOOKUP_CONCURRENCY,
          warmupMs: 0,
          durationMs: ctx.load.durationMs,
          op: (w, i) => unary(client!, client!.getEvaluation, { evalId: idOf(w, i) }),
        });
        client!.close();
      }
      const byReplicas = new Map<number, { result: LoadResult; cpu: CpuUse }>();
      for (let count = 1; count <= replicas.length; count++) {
        const serving = replicas.slice(0, count);
        const [client] = createClients(
          EvaluationQueryServiceClient,
          `ipv4:${serving.map((r) => r.address).join(',')}`,
          1,
          { 'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }) },
        );
        const uses: CpuUse[] = [];
        const results: LoadResult[] = [];
        for (let round = 0; round < ctx.load.rounds; round++) {
          ctx.progress(
            `scale-out: GetEvaluation c=${REPLICA_CONCURRENCY} over ${count} replica(s), round ${round + 1}`,
          );
          const cpu = measureCpu([
            { name: 'query replicas', pids: serving.map((r) => r.pid) },
            { name: 'Redis', comm: 'redis-server' },
            { name: 'bench client', pids: [process.pid] },
          ]);
          results.push(
            await closedLoop({
              concurrency: REPLICA_CONCURRENCY,
              warmupMs: ctx.load.warmupMs,
              durationMs: ctx.load.durationMs,
              op: (w, i) => unary(client!, client!.getEvaluation, { evalId: idOf(w, i) }),
            }),
          );
          uses.push(cpu.stop());
        }
        client!.close();
        const middle = [...results].sort((a, b) => a.rate - b.rate)[Math.floor(results.length / 2)]!;
        byReplicas.set(count, { result: middle, cpu: sumCpu(uses) });
      }

      const lookup = (side: Side): LoadResult => lookups.get(side.name)!;
      const p99Of = (side: Side): number => median(propagation.get(side.name)!.map((l) => l.p99Ms));
      const rebuildOf = (side: Side): number => median(rebuilds.get(side.name)!);
      const lookupRatio = lookup(clustered).rate / lookup(single).rate;
      const rebuildRatio = rebuildOf(single) / rebuildOf(clustered);
      const events = single.events.toLocaleString('en-US');
      const rows: Row[] = [
        {
          scenario: 'Redis Cluster vs one Redis: GetEvaluation',
          case: `c=${LOOKUP_CONCURRENCY}, ${evaluations} evaluations, ${PARTITIONS} partitions`,
          subject: loadFigures('on the cluster', lookup(clustered), 'req/s'),
          floors: [loadFigures('on one Redis', lookup(single), 'req/s')],
          ratio: lookupRatio,
        },
        {
          scenario: 'Redis Cluster vs one Redis: propagation (ack → watcher)',
          case: `${PROPAGATION_RATE}/s`,
          subject: { name: 'on the cluster', figures: [figure('p99', p99Of(clustered), 'ms')] },
          floors: [{ name: 'on one Redis', figures: [figure('p99', p99Of(single), 'ms')] }],
          ratio: p99Of(single) / p99Of(clustered),
        },
        {
          scenario: 'Redis Cluster vs one Redis: rebuild CLI',
          case: `${events} events`,
          subject: {
            name: 'on the cluster',
            figures: [
              figure('', single.events / rebuildOf(clustered), 'events/s'),
              figure('in', rebuildOf(clustered), 's'),
            ],
          },
          floors: [
            {
              name: 'on one Redis',
              figures: [
                figure('', single.events / rebuildOf(single), 'events/s'),
                figure('in', rebuildOf(single), 's'),
              ],
            },
          ],
          ratio: rebuildRatio,
        },
      ];
      const one = byReplicas.get(1)!.result;
      const notes: string[] = [];
      for (const [count, { result, cpu }] of byReplicas) {
        rows.push({
          scenario: 'GetEvaluation over query replicas (one Redis, round-robin client)',
          case: `${count} replica(s), c=${REPLICA_CONCURRENCY}`,
          subject: loadFigures(`${count} replica(s)`, result, 'req/s'),
          floors: [loadFigures('1 replica', one, 'req/s')],
          ratio: result.rate / one.rate,
        });
        const per = cpuPerUnit(cpu, result.ops * ctx.load.rounds);
        notes.push(
          `${count} replica(s): CPU per lookup ${per.groups.map((g) => `${g.name} ${g.ms.toFixed(3)} ms`).join(', ')}; ` +
            `the whole machine ${per.machineMs.toFixed(3)} ms (saturated at about ${Math.round(per.saturationPerSecond)} lookups/s).`,
        );
      }
      const checks: Check[] = [
        ratioCheck(
          'GetEvaluation on the cluster ≥ 0.7× one Redis',
          lookupRatio,
          0.7,
          `${Math.round(lookup(clustered).rate)} vs ${Math.round(lookup(single).rate)} req/s`,
        ),
        ratioCheck(
          'Rebuild on the cluster ≥ 0.5× one Redis',
          rebuildRatio,
          0.5,
          `${rebuildOf(clustered).toFixed(2)} s vs ${rebuildOf(single).toFixed(2)} s for ${events} events`,
        ),
      ];
      return {
        rows,
        checks,
        notes: [
          `One Redis and the cluster run side by side on this machine (the cluster's six redis-server processes share its cores with everything else, so it cannot be faster here): both sides with READ_MODEL_PARTITIONS=${PARTITIONS}, the same generated event log (${events} events), the rebuild CLI and the lookups alternating sides round by round (medians). Propagation: open loop at ${PROPAGATION_RATE} submits/s, latency from the acknowledgement to the WatchEvaluations update; on the cluster the tail polls each partition when the replica's projector has taken a step (docs/read-models.md). Ratios: cluster ÷ one Redis for throughput, one Redis ÷ cluster for times (higher is better).`,
          `Replicas: GetEvaluation at c=${REPLICA_CONCURRENCY} through one client that spreads calls round robin over the replicas' addresses (grpc-js ipv4: target). On 2 cores the replicas, Redis and the client compete for the same CPU: the rate stops growing once the cores are busy, and the CPU per lookup is what a larger machine would divide among more cores.`,
          ...notes,
        ],
      };
    } finally {
      for (const side of sides) await side.stack.close();
      await cluster.stop();
    }
  },
};
