import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { availableParallelism } from 'node:os';
import { measurePubSubRoundTrip } from '../floors/redis-pubsub';
import { cpuPerUnit, measureCpu, type CpuUse } from '../support/cpu';
import { submitRequest } from '../support/evaluations';
import { closeAll, createClients, SETUP_DEADLINE_MS, unary } from '../support/grpc';
import { openLoop, withWatchdog, type OpenLoopResult } from '../support/load';
import { figure, type Check, type Row } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack } from '../support/stack';
import { createLatencyRecorder, type LatencySummary } from '../support/stats';
import { watchPositions } from '../support/watch-positions';

/** The second floor of each row: the command half alone (no projection, no watcher). */
const COMMAND_FLOOR = 'bare grpc-js + pg, same SQL, open loop (command half alone): ack latency';

/** Offered update rates and how long each is held (the 1,000/s run is short: see the notes). */
const RATES = [
  { perSecond: 100, durationMs: 10_000 },
  { perSecond: 1000, durationMs: 5_000 },
];
const SMOKE_RATES = RATES.map((r) => ({ ...r, durationMs: 300 }));

/** What one update (or command) cost in CPU, and where the machine's cores saturate at that cost. */
function cpuNote(what: string, perSecond: number, cpu: CpuUse, count: number, unit = 'updates'): string {
  const per = cpuPerUnit(cpu, count);
  return (
    `${what} at ${perSecond}/s (${count} ${unit} in ${cpu.wallSeconds.toFixed(1)} s): ` +
    per.groups.map((g) => `${g.name} ${g.ms.toFixed(2)} ms`).join(', ') +
    `; the whole machine ${per.machineMs.toFixed(2)} ms, so its ${availableParallelism()} cores are saturated at about ` +
    `${Math.round(per.saturationPerSecond)} ${unit}/s.`
  );
}

function latencyFigures(latency: LatencySummary, rate: OpenLoopResult): ReturnType<typeof figure>[] {
  return [
    figure('p50', latency.p50Ms, 'ms'),
    figure('p99', latency.p99Ms, 'ms'),
    figure('offered', rate.startRate, '/s'),
    figure('done', rate.completionRate, '/s'),
    ...(rate.failed > 0 ? [figure('failed', rate.failed, `of ${rate.started}`)] : []),
  ];
}

export const propagation: Scenario = {
  name: 'propagation',
  description:
    'command acknowledged → WatchEvaluations watcher receives the update, at 100 and 1,000 updates/s, beside a raw Redis publish → subscriber round trip',
  async run(ctx) {
    const stack = await createBenchStack(ctx);
    try {
      const command = await stack.start('command');
      const query = await stack.start('query');
      const commandFloor = await stack.startFloor('pg-commands');
      const [commandClient] = createClients(EvaluationCommandServiceClient, command.address, 1);
      const [floorClient] = createClients(EvaluationCommandServiceClient, commandFloor.address, 1);
      const [queryClient] = createClients(EvaluationQueryServiceClient, query.address, 1);
      const { position: start } = await unary(
        commandClient!,
        commandClient!.submitEvaluation,
        submitRequest(0),
        SETUP_DEADLINE_MS,
      );
      const stream = queryClient!.watchEvaluations({ afterPosition: start, statuses: [], evalIds: [] });
      stream.on('error', () => undefined); // cancelled at the end
      const watcher = watchPositions(stream);
      await withWatchdog(watcher.caughtUp, SETUP_DEADLINE_MS, 'WatchEvaluations caught-up marker');

      // Warm-up, not measured: the first thousand commands also compile the hot paths of all three
      // processes (hundreds of ms of CPU), which would land in the 100/s figures.
      ctx.progress('propagation: warm-up at 100 updates/s');
      const warmUp = await openLoop({
        ratePerSecond: 100,
        durationMs: ctx.smoke ? 100 : 3000,
        drainMs: 120_000,
        op: async (n) => {
          const { position } = await unary(commandClient!, commandClient!.submitEvaluation, submitRequest(-1 - n));
          await watcher.arrival(position);
        },
      });
      if (warmUp.firstError !== undefined) throw new Error(`warm-up command failed: ${warmUp.firstError}`);
      ctx.progress('propagation: warm-up at 100 commands/s: the command half alone (bare grpc-js + pg)');
      const floorWarmUp = await openLoop({
        ratePerSecond: 100,
        durationMs: ctx.smoke ? 100 : 3000,
        drainMs: 120_000,
        op: (n) => unary(floorClient!, floorClient!.submitEvaluation, submitRequest(-1 - n)),
      });
      if (floorWarmUp.firstError !== undefined) {
        throw new Error(`floor warm-up command failed: ${floorWarmUp.firstError}`);
      }

      const rows: Row[] = [];
      const notes: string[] = [];
      const at1000: { service?: LatencySummary } = {};
      for (const { perSecond, durationMs } of ctx.smoke ? SMOKE_RATES : RATES) {
        const seconds = durationMs / 1000;
        ctx.progress(`propagation: ${perSecond} updates/s for ${seconds} s: command service → query service → watcher`);
        const latency = createLatencyRecorder();
        const cpu = measureCpu([
          { name: 'command service', pids: [command.pid] },
          { name: 'query service', pids: [query.pid] },
          { name: 'PostgreSQL', comm: 'postgres' },
          { name: 'Redis', comm: 'redis-server' },
          { name: 'bench client', pids: [process.pid] },
        ]);
        const offered = await openLoop({
          ratePerSecond: perSecond,
          durationMs,
          // The command side may fall behind the offered rate; its backlog must still drain.
          drainMs: 120_000,
          op: async (n) => {
            const { position } = await unary(commandClient!, commandClient!.submitEvaluation, submitRequest(n));
            const acknowledged = process.hrtime.bigint();
            const received = await watcher.arrival(position);
            // The update can reach the watcher before the acknowledgement reaches the client: 0.
            latency.recordNs(Math.max(0, Number(received - acknowledged)));
          },
        });
        notes.push(cpuNote('CPU per update', perSecond, cpu.stop(), offered.started - offered.failed));
        ctx.progress(`propagation: ${perSecond} messages/s for ${seconds} s: raw Redis publish → subscriber`);
        const floor = await measurePubSubRoundTrip(
          stack.environment.config.redisUrl,
          `${stack.environment.config.redisKeyPrefix}-floor:changes`,
          perSecond,
          durationMs,
        );
        if (offered.firstError !== undefined) {
          notes.push(
            `Propagation at ${perSecond}/s: ${offered.failed} of ${offered.started} commands failed, e.g. "${offered.firstError}".`,
          );
        }
        ctx.progress(
          `propagation: ${perSecond} commands/s for ${seconds} s: the command half alone (bare grpc-js + pg, same SQL)`,
        );
        const ackLatency = createLatencyRecorder();
        const floorCpu = measureCpu([
          { name: 'floor server', pids: [commandFloor.pid] },
          { name: 'PostgreSQL', comm: 'postgres' },
          { name: 'bench client', pids: [process.pid] },
        ]);
        const floorOffered = await openLoop({
          ratePerSecond: perSecond,
          durationMs,
          drainMs: 120_000,
          op: async (n) => {
            const startedAt = process.hrtime.bigint();
            await unary(floorClient!, floorClient!.submitEvaluation, submitRequest(n));
            ackLatency.recordNs(Number(process.hrtime.bigint() - startedAt));
          },
        });
        notes.push(
          cpuNote(
            'Command half alone (bare grpc-js + pg floor, SubmitEvaluation open loop), CPU per command',
            perSecond,
            floorCpu.stop(),
            floorOffered.started - floorOffered.failed,
            'commands',
          ),
        );
        if (floorOffered.firstError !== undefined) {
          notes.push(
            `Command half alone at ${perSecond}/s: ${floorOffered.failed} of ${floorOffered.started} commands failed, e.g. "${floorOffered.firstError}".`,
          );
        }
        const service = latency.summary();
        if (perSecond === 1000) at1000.service = service;
        rows.push({
          scenario: 'update propagation (ack → watcher)',
          case: `${perSecond}/s`,
          subject: { name: 'command → query → WatchEvaluations', figures: latencyFigures(service, offered) },
          floors: [
            { name: 'Redis SPUBLISH → subscriber', figures: latencyFigures(floor.latency, floor.rate) },
            { name: COMMAND_FLOOR, figures: latencyFigures(ackLatency.summary(), floorOffered) },
          ],
          // Latency: the floor's p99 over the service's, so that higher is better as elsewhere.
          ratio: floor.latency.p99Ms / service.p99Ms,
        });
      }
      stream.cancel();
      closeAll([commandClient!, queryClient!, floorClient!]);
      const p99 = at1000.service?.p99Ms ?? NaN;
      const checks: Check[] = [
        { target: 'Propagation p99 ≤ 5 ms at 1,000 updates/s', actual: `${p99.toFixed(2)} ms`, met: p99 <= 5 },
      ];
      return {
        rows,
        checks,
        notes: [
          'Propagation: one SubmitEvaluation per update, started on schedule (open loop) whatever the service is doing; latency from the acknowledgement to the WatchEvaluations update (0 when the update came first). "offered" is the start rate, "done" the rate commands completed at: below the offered rate, the command side was the limit and the backlog drained after the schedule. Ratio: floor p99 ÷ service p99 (higher is better), with the Redis floor. The second floor is the command half alone: the bare grpc-js + pg floor (the command service\'s SQL, nothing else) driven open loop at the same rate, its latency from the call\'s start to its acknowledgement: whether the command side by itself can carry the rate on this machine.',
          ...notes,
        ],
      };
    } finally {
      await stack.close();
    }
  },
};
