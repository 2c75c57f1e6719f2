import { Evaluation } from '../../shared/generated/crucible/storage/v1/evaluation';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { getEvaluation, submitRequest } from '../support/evaluations';
import { closeAll, createClients, SETUP_DEADLINE_MS, unary } from '../support/grpc';
import { readMemory } from '../support/memory';
import { figure, type Check, type Measured, type Row } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack } from '../support/stack';
import { openWatchers } from '../support/watchers';

const KiB = 1024;
const TARGET_KIB_PER_STREAM = 20;

/** The process's RSS once it has stopped moving: two readings 500 ms apart within 1%, or the last of ten. */
async function settledRssMiB(pid: number): Promise<number> {
  let last = readMemory(pid).rssMiB;
  for (let i = 0; i < 10; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const now = readMemory(pid).rssMiB;
    if (Math.abs(now - last) <= last * 0.01) return now;
    last = now;
  }
  return last;
}

interface Held {
  readonly idleMiB: number;
  readonly heldMiB: number;
  readonly kibPerStream: number;
  readonly openSeconds: number;
}

/** RSS of `pid` idle, then holding `streams` idle WatchEvaluation streams, `perConnection` per connection. */
async function hold(
  address: string,
  pid: number,
  evalId: string,
  streams: number,
  perConnection: number,
): Promise<Held> {
  const idleMiB = await settledRssMiB(pid);
  const watchers = openWatchers(address, evalId, streams, perConnection);
  try {
    const openSeconds = await watchers.ready;
    const heldMiB = await settledRssMiB(pid);
    return { idleMiB, heldMiB, kibPerStream: ((heldMiB - idleMiB) * KiB) / streams, openSeconds };
  } finally {
    await watchers.close();
  }
}

function measured(name: string, held: Held): Measured {
  return {
    name,
    figures: [
      figure('per stream', held.kibPerStream, 'KiB'),
      figure('idle', held.idleMiB, 'MiB'),
      figure('holding them', held.heldMiB, 'MiB'),
      figure('opened in', held.openSeconds, 's'),
    ],
  };
}

/**
 * Memory per idle stream: what each open WatchEvaluation costs the query service while nothing
 * happens, measured as the growth of its RSS (settled) from idle to holding the streams, beside
 * the bare grpc-js server holding as many (floors/memory-server.ts). The streams are held by a
 * child process (bench/support/watchers.ts), at 100 and at 1,000 per HTTP/2 connection.
 */
export const idleStreams: Scenario = {
  name: 'idle-streams',
  description:
    'memory per idle WatchEvaluation stream above the idle query service, 10,000 streams at 100 and 1,000 per connection, beside a bare grpc-js server holding as many',
  async run(ctx) {
    const streams = ctx.smoke ? 200 : 10_000;
    const stack = await createBenchStack(ctx);
    try {
      const command = await stack.start('command');
      const reader = await stack.start('query');
      const [commandClient] = createClients(EvaluationCommandServiceClient, command.address, 1);
      const [queryClient] = createClients(EvaluationQueryServiceClient, reader.address, 1);
      const submitted = await unary(
        commandClient!,
        commandClient!.submitEvaluation,
        submitRequest(0),
        SETUP_DEADLINE_MS,
      );
      const evaluation = await getEvaluation(queryClient!, submitted.evalId, BigInt(submitted.position));
      closeAll([commandClient!, queryClient!]);
      await reader.stop();

      const rows: Row[] = [];
      const checks: Check[] = [];
      for (const perConnection of [100, 1000]) {
        // Fresh processes for each case: a process that held streams once does not give its
        // heap back, and would start the next case from a higher "idle".
        const query = await stack.start('query');
        const floor = await stack.startFloor('memory-server', {
          FLOOR_EVALUATION: JSON.stringify(Evaluation.toJSON(evaluation)),
        });
        ctx.progress(`idle-streams: ${streams} streams, ${perConnection} per connection, on the query service`);
        const service = await hold(query.address, query.pid, submitted.evalId, streams, perConnection);
        ctx.progress(`idle-streams: ${streams} streams, ${perConnection} per connection, on the bare grpc-js server`);
        const bare = await hold(floor.address, floor.pid, submitted.evalId, streams, perConnection);
        await query.stop();
        await floor.stop();
        rows.push({
          scenario: 'idle WatchEvaluation streams (memory above the idle process)',
          case: `${streams.toLocaleString('en-US')} streams, ${perConnection} per connection`,
          subject: measured('query service', service),
          floors: [measured('bare grpc-js server', bare)],
          // Lower is better: the floor's cost over the service's.
          ratio: bare.kibPerStream / service.kibPerStream,
        });
        checks.push({
          target: `≤ ${TARGET_KIB_PER_STREAM} KiB per idle stream above the idle process, ${perConnection} streams per connection`,
          actual: `${service.kibPerStream.toFixed(1)} KiB (the bare server ${bare.kibPerStream.toFixed(1)} KiB)`,
          met: service.kibPerStream <= TARGET_KIB_PER_STREAM,
        });
      }
      return {
        rows,
        checks,
        notes: [
          'Idle streams: RSS read from /proc once it settles (two readings 500 ms apart within 1%), before the streams open and once every stream has its first message; per stream is the growth divided by the streams. Ratio: the bare server per stream ÷ the service per stream.',
        ],
      };
    } finally {
      await stack.close();
    }
  },
};
