import { Evaluation } from '../../shared/generated/crucible/storage/v1/evaluation';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { completeRequest, getEvaluation, startRequest, submitRequest } from '../support/evaluations';
import { closeAll, createClients, SETUP_DEADLINE_MS, unary } from '../support/grpc';
import { readMemory, watchPeakMemory } from '../support/memory';
import { wallClockMs } from '../support/progress';
import { figure, type Measured } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack } from '../support/stack';
import { median } from '../support/stats';
import { openWatchers } from '../support/watchers';

const TIMEOUT_MS = 120_000;

interface FanOut {
  /** Trigger sent → the last stream received it (ms), per trial. */
  readonly times: number[];
  readonly openSeconds: number;
  readonly peakMiB: number;
}

/**
 * Opens `streams` WatchEvaluation streams on `evalId` at `address` (in a child process), then
 * per trigger measures the time from just before the trigger until the last stream has the
 * revision it makes. Tracks the server's peak RSS meanwhile.
 */
async function fanOut(
  address: string,
  serverPid: number,
  evalId: string,
  streams: number,
  triggers: readonly { revision: string; fire(): Promise<unknown> }[],
): Promise<FanOut> {
  const memory = watchPeakMemory(serverPid);
  const watchers = openWatchers(address, evalId, streams);
  try {
    const openSeconds = await watchers.ready;
    const times: number[] = [];
    for (const trigger of triggers) {
      const arrival = watchers.expect(trigger.revision, TIMEOUT_MS);
      const sentAt = wallClockMs();
      await trigger.fire();
      times.push((await arrival).lastAt - sentAt);
    }
    return { times, openSeconds, peakMiB: memory.stop().peakMiB };
  } finally {
    await watchers.close();
  }
}

function measured(name: string, result: FanOut): Measured {
  return {
    name,
    figures: [
      figure('to all', median(result.times), 'ms'),
      figure('peak RSS', result.peakMiB, 'MiB'),
      figure('streams opened in', result.openSeconds, 's'),
    ],
  };
}

export const fanout: Scenario = {
  name: 'fanout',
  description:
    'one update to 10,000 WatchEvaluation streams on one query service (time until all have it; query RSS), beside a bare grpc-js server writing to as many streams',
  async run(ctx) {
    const streams = ctx.smoke ? 200 : 10_000;
    const stack = await createBenchStack(ctx);
    try {
      const command = await stack.start('command');
      const query = await stack.start('query');
      const [commandClient] = createClients(EvaluationCommandServiceClient, command.address, 1);
      const [queryClient] = createClients(EvaluationQueryServiceClient, query.address, 1);
      // A WatchEvaluation stream sees two changes after the current state (start, then
      // complete, which ends it), so the service is measured on two evaluations in turn.
      const evalIds: string[] = [];
      let position = '0';
      for (let n = 0; n < 2; n++) {
        const submitted = await unary(
          commandClient!,
          commandClient!.submitEvaluation,
          submitRequest(n),
          SETUP_DEADLINE_MS,
        );
        evalIds.push(submitted.evalId);
        position = submitted.position;
      }
      const evaluation = await getEvaluation(queryClient!, evalIds[0]!, BigInt(position));

      const floor = await stack.startFloor('memory-server', {
        FLOOR_EVALUATION: JSON.stringify(Evaluation.toJSON(evaluation)),
      });
      ctx.progress(`fanout: ${streams} streams on the bare grpc-js server`);
      // The floor writes the next revision to every stream on SIGUSR2.
      const signalFloor = (revision: number) => ({
        revision: String(revision),
        fire: () => Promise.resolve(void process.kill(floor.pid, 'SIGUSR2')),
      });
      const bare = await fanOut(floor.address, floor.pid, evalIds[0]!, streams, [2, 3, 4, 5].map(signalFloor));

      const runs: FanOut[] = [];
      for (const evalId of evalIds) {
        ctx.progress(
          `fanout: ${streams} streams on the query service (evaluation ${runs.length + 1}/${evalIds.length})`,
        );
        runs.push(
          await fanOut(query.address, query.pid, evalId, streams, [
            {
              revision: '2',
              fire: () =>
                unary(commandClient!, commandClient!.startEvaluation, startRequest(evalId), SETUP_DEADLINE_MS),
            },
            {
              revision: '3',
              fire: () =>
                unary(commandClient!, commandClient!.completeEvaluation, completeRequest(evalId), SETUP_DEADLINE_MS),
            },
          ]),
        );
      }
      const service: FanOut = {
        times: runs.flatMap((r) => r.times),
        openSeconds: median(runs.map((r) => r.openSeconds)),
        peakMiB: Math.max(...runs.map((r) => r.peakMiB)),
      };
      const queryRssAfterMiB = readMemory(query.pid).rssMiB;
      closeAll([commandClient!, queryClient!]);

      const ratio = median(bare.times) / median(service.times);
      return {
        rows: [
          {
            scenario: 'fan-out (one update to every stream)',
            case: `${streams.toLocaleString('en-US')} streams`,
            subject: measured('query service (trigger: StartEvaluation, then CompleteEvaluation)', service),
            floors: [measured('bare grpc-js server, from memory (trigger: signal)', bare)],
            ratio,
          },
        ],
        checks: [
          {
            target: 'Fan-out to 10,000 streams ≤ 2× the bare server’s time',
            actual: `${(1 / ratio).toFixed(3)}× (${median(service.times).toFixed(0)} vs ${median(bare.times).toFixed(0)} ms, ${streams} streams)`,
            met: 1 / ratio <= 2,
          },
          {
            target: 'Query service RSS under 1 GiB with 10,000 streams',
            actual: `peak ${service.peakMiB.toFixed(0)} MiB (${queryRssAfterMiB.toFixed(0)} MiB after the streams closed)`,
            met: service.peakMiB < 1024,
          },
        ],
        notes: [
          'Fan-out time: from just before the trigger (the command is sent; the floor is signalled) until the last stream has the update, median of 4 triggers (the service: StartEvaluation and CompleteEvaluation on each of 2 evaluations); the service time includes the command itself. Ratio: floor time ÷ service time.',
        ],
      };
    } finally {
      await stack.close();
    }
  },
};
