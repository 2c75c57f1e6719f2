import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import {
  EvaluationQueryServiceClient,
  OutputKind,
  type ReadOutputResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { createS3Client } from '../../shared/s3';
import { rawS3Transfer } from '../floors/s3-raw';
import { completeRequest, getEvaluation, startRequest, submitRequest } from '../support/evaluations';
import { closeAll, createClients, LARGE_MESSAGES, SETUP_DEADLINE_MS, unary } from '../support/grpc';
import { measureCpu, type CpuUse } from '../support/cpu';
import { watchPeakMemory } from '../support/memory';
import { figure, type Check, type Measured } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack } from '../support/stack';
import { median } from '../support/stats';

const MB = 1e6;

/** Reads a whole output through ReadOutput. */
function readOutput(client: EvaluationQueryServiceClient, evalId: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const stream = client.readOutput({ evalId, kind: OutputKind.OUTPUT_KIND_OUTPUT });
    stream.on('data', (message: ReadOutputResponse) => chunks.push(message.chunk));
    stream.on('error', reject);
    stream.on('end', () => resolve(Buffer.concat(chunks)));
  });
}

const seconds = async (work: () => Promise<unknown>): Promise<number> => {
  const start = performance.now();
  await work();
  return (performance.now() - start) / 1000;
};

/** CPU milliseconds per MB moved, of each group and of the whole machine, summed over the rounds. */
function cpuPerMB(uses: CpuUse[], bytes: number): string {
  const megabytes = (bytes * uses.length) / MB;
  const names = uses[0]?.groups.map((g) => g.name) ?? [];
  const ms = (seconds: number): string => ((seconds * 1000) / megabytes).toFixed(1);
  const parts = names.map((name, i) => `${name} ${ms(uses.reduce((sum, u) => sum + (u.groups[i]?.seconds ?? 0), 0))}`);
  return `${parts.join(', ')}; machine ${ms(uses.reduce((sum, u) => sum + u.machineSeconds, 0))} ms/MB`;
}

const machineMsPerMB = (uses: CpuUse[], bytes: number): number =>
  (uses.reduce((sum, u) => sum + u.machineSeconds, 0) * 1000) / ((bytes * uses.length) / MB);

/**
 * The best ratio to raw S3 the output path can reach on this stack, from its two hops measured
 * apart: the gRPC hop alone (bare grpc-js, to or from memory) and the S3 hop (raw put/get).
 */
function outputBounds(
  runs: Record<'put' | 'get' | 'grpcWrite' | 'grpcRead', number[]>,
  cpu: Record<'put' | 'get' | 'grpcWrite' | 'grpcRead', CpuUse[]>,
  size: number,
): string {
  const put = median(runs.put);
  const get = median(runs.get);
  // Unary: the service has the output only once the whole request has arrived, so its upload
  // follows the gRPC hop; at best the two take their times measured apart, one after the other.
  const writeBound = put / (median(runs.grpcWrite) + put);
  // ReadOutput streams, so the hops may overlap: it is bounded by the slower hop, and by the
  // rate at which the machine's cores can do the work of both hops (CPU per MB of each, apart).
  const readByTime = Math.min(1, get / median(runs.grpcRead));
  const cpuMsPerMB = machineMsPerMB(cpu.get, size) + machineMsPerMB(cpu.grpcRead, size);
  const readByCpu = (availableParallelism() * 1000) / cpuMsPerMB / (size / MB / get);
  const f = (x: number): string => `${x.toFixed(2)}×`;
  return (
    `Bounds from the hops measured apart: CompleteEvaluation is unary, so its S3 upload can only start once the gRPC hop has ended: ` +
    `at best ${f(writeBound)} raw PutObject (put time ÷ (gRPC hop time + put time)). ReadOutput streams, so its hops can overlap: ` +
    `at best ${f(readByTime)} raw GetObject by the slower hop's time, and ${f(readByCpu)} by the CPU both hops need per MB on these ${availableParallelism()} cores.`
  );
}

export const output: Scenario = {
  name: 'output',
  description:
    'the largest output CompleteEvaluation accepts, stored in S3 and read back with ReadOutput (MB/s, peak RSS growth of each service) beside raw @aws-sdk/client-s3 put/get of the same bytes',
  async run(ctx) {
    // The smoke run lowers the limit, but keeps the output above the 1 MiB inline threshold (S3).
    const stack = await createBenchStack(ctx, ctx.smoke ? { MAX_OUTPUT_BYTES: String(2 * 1024 * 1024) } : {});
    const s3 = createS3Client(stack.environment.config.s3);
    try {
      const size = stack.environment.config.limits.maxOutputBytes;
      const command = await stack.start('command');
      const query = await stack.start('query');
      const [commandClient] = createClients(EvaluationCommandServiceClient, command.address, 1, LARGE_MESSAGES);
      const [queryClient] = createClients(EvaluationQueryServiceClient, query.address, 1, LARGE_MESSAGES);
      const transfer = await stack.startFloor('grpc-transfer', { FLOOR_TRANSFER_BYTES: String(size) });
      const [floorCommandClient] = createClients(EvaluationCommandServiceClient, transfer.address, 1, LARGE_MESSAGES);
      const [floorQueryClient] = createClients(EvaluationQueryServiceClient, transfer.address, 1, LARGE_MESSAGES);
      const body = randomBytes(size);
      const runs = {
        write: [] as number[],
        read: [] as number[],
        put: [] as number[],
        get: [] as number[],
        grpcWrite: [] as number[],
        grpcRead: [] as number[],
        commandGrowth: [] as number[],
        queryGrowth: [] as number[],
      };
      const cpu = {
        write: [] as CpuUse[],
        read: [] as CpuUse[],
        put: [] as CpuUse[],
        get: [] as CpuUse[],
        grpcWrite: [] as CpuUse[],
        grpcRead: [] as CpuUse[],
      };
      const floorServer = { name: 'bare server', pids: [transfer.pid] };
      const bench = { name: 'bench client', pids: [process.pid] };
      const s3rver = { name: 's3rver', pids: [ctx.s3Pid] };
      const repetitions = ctx.smoke ? 1 : 3;
      for (let rep = 0; rep < repetitions; rep++) {
        ctx.progress(
          `output: ${(size / 2 ** 20).toFixed(0)} MiB, round ${rep + 1}/${repetitions}: CompleteEvaluation → ReadOutput, then raw S3 put/get`,
        );
        const { evalId } = await unary(
          commandClient!,
          commandClient!.submitEvaluation,
          submitRequest(rep),
          SETUP_DEADLINE_MS,
        );
        await unary(commandClient!, commandClient!.startEvaluation, startRequest(evalId), SETUP_DEADLINE_MS);

        const commandMemory = watchPeakMemory(command.pid);
        const writeCpu = measureCpu([bench, { name: 'command service', pids: [command.pid] }, s3rver]);
        let position = '0';
        runs.write.push(
          await seconds(async () => {
            ({ position } = await unary(
              commandClient!,
              commandClient!.completeEvaluation,
              completeRequest(evalId, body),
              SETUP_DEADLINE_MS,
            ));
          }),
        );
        cpu.write.push(writeCpu.stop());
        runs.commandGrowth.push(commandMemory.stop().growthMiB);
        const stored = await getEvaluation(queryClient!, evalId, BigInt(position));
        if (stored.outputLocation !== 's3')
          throw new Error(`a ${size}-byte output was kept in "${stored.outputLocation}", not S3`);

        const queryMemory = watchPeakMemory(query.pid);
        const readCpu = measureCpu([bench, { name: 'query service', pids: [query.pid] }, s3rver]);
        let read: Buffer = Buffer.alloc(0);
        runs.read.push(await seconds(async () => (read = await readOutput(queryClient!, evalId))));
        cpu.read.push(readCpu.stop());
        runs.queryGrowth.push(queryMemory.stop().growthMiB);
        if (!read.equals(body))
          throw new Error(`ReadOutput returned ${read.length} bytes that differ from the ${size} completed`);

        const raw = await rawS3Transfer(s3, stack.environment.config.s3.bucket, `bench-floor/${rep}`, body, () =>
          measureCpu([bench, s3rver]),
        );

        // The gRPC hop alone: the same request and the same chunks, to and from memory.
        const grpcWriteCpu = measureCpu([bench, floorServer]);
        runs.grpcWrite.push(
          await seconds(() =>
            unary(
              floorCommandClient!,
              floorCommandClient!.completeEvaluation,
              completeRequest(evalId, body),
              SETUP_DEADLINE_MS,
            ),
          ),
        );
        cpu.grpcWrite.push(grpcWriteCpu.stop());
        const grpcReadCpu = measureCpu([bench, floorServer]);
        let floorRead: Buffer = Buffer.alloc(0);
        runs.grpcRead.push(await seconds(async () => (floorRead = await readOutput(floorQueryClient!, evalId))));
        cpu.grpcRead.push(grpcReadCpu.stop());
        if (floorRead.length !== size)
          throw new Error(`the gRPC floor streamed ${floorRead.length} bytes, not ${size}`);

        cpu.put.push(raw.putCpu);
        cpu.get.push(raw.getCpu);
        runs.put.push(raw.putSeconds);
        runs.get.push(raw.getSeconds);
      }
      closeAll([commandClient!, queryClient!, floorCommandClient!, floorQueryClient!]);

      const mbps = (list: number[]): number => size / MB / median(list);
      const service = (name: string, list: number[], growth: number[]): Measured => ({
        name,
        figures: [figure('', mbps(list), 'MB/s'), figure('peak RSS growth', Math.max(...growth), 'MiB')],
      });
      const raw = (name: string, list: number[]): Measured => ({ name, figures: [figure('', mbps(list), 'MB/s')] });
      const sizeCase = `${(size / 2 ** 20).toFixed(0)} MiB`;
      const writeRatio = mbps(runs.write) / mbps(runs.put);
      const readRatio = mbps(runs.read) / mbps(runs.get);
      const checks: Check[] = [
        { target: 'Output write ≥ 0.7× raw S3 put', actual: `${writeRatio.toFixed(3)}×`, met: writeRatio >= 0.7 },
        { target: 'Output read ≥ 0.7× raw S3 get', actual: `${readRatio.toFixed(3)}×`, met: readRatio >= 0.7 },
        {
          target: 'Peak RSS growth under 64 MiB (both services)',
          actual: `command +${Math.max(...runs.commandGrowth).toFixed(0)} MiB, query +${Math.max(...runs.queryGrowth).toFixed(0)} MiB`,
          met: Math.max(...runs.commandGrowth, ...runs.queryGrowth) < 64,
        },
      ];
      return {
        rows: [
          {
            scenario: 'largest output: CompleteEvaluation (to S3)',
            case: sizeCase,
            subject: service('command service', runs.write, runs.commandGrowth),
            floors: [
              raw('raw S3 PutObject', runs.put),
              raw('bare grpc-js, to memory (the gRPC hop alone)', runs.grpcWrite),
            ],
            ratio: writeRatio,
          },
          {
            scenario: 'largest output: ReadOutput (from S3)',
            case: sizeCase,
            subject: service('query service', runs.read, runs.queryGrowth),
            floors: [
              raw('raw S3 GetObject', runs.get),
              raw('bare grpc-js, from memory (the gRPC hop alone)', runs.grpcRead),
            ],
            ratio: readRatio,
          },
        ],
        checks,
        notes: [
          'Output rows: MB/s is 10^6 bytes per second, the median of the rounds; RSS growth is the largest over the rounds (peak during the call minus RSS before it).',
          `Output CPU per MB (all rounds): CompleteEvaluation: ${cpuPerMB(cpu.write, size)}; raw PutObject: ${cpuPerMB(cpu.put, size)}; gRPC hop alone: ${cpuPerMB(cpu.grpcWrite, size)}. ReadOutput: ${cpuPerMB(cpu.read, size)}; raw GetObject: ${cpuPerMB(cpu.get, size)}; gRPC hop alone: ${cpuPerMB(cpu.grpcRead, size)}. Where the machine's cores are the limit, a path's throughput relative to raw S3 is at most raw CPU per MB ÷ its own.`,
          outputBounds(runs, cpu, size),
        ],
      };
    } finally {
      s3.destroy();
      await stack.close();
    }
  },
};
