import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { createTestEnvironment, type TestEnvironment } from '../../test/support/environment';
import { waitForServing, type ServiceKind } from '../../test/support/processes';
import { deleteKeys } from '../../test/support/redis-keys';

export { deleteKeys };
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { closeAll, createClients, LARGE_MESSAGES } from './grpc';
import { startListening, type ListeningProcess } from './processes';
import type { BenchContext } from './scenario';

/** The project root, from dist/bench/support. */
export const PROJECT_ROOT = resolve(__dirname, '..', '..', '..');

/** A service's entry point, as `npm run start:<kind>` runs it. */
export function serviceScript(kind: ServiceKind): string {
  return join(PROJECT_ROOT, 'dist', 'services', kind, 'main.js');
}

/** A floor server's entry point (bench/floors/<name>.ts, compiled). */
export function floorScript(name: string): string {
  return join(__dirname, '..', 'floors', `${name}.js`);
}

/**
 * One scenario's isolated world: its own database (migrated), Redis key prefix and bucket on
 * the shared servers (test/support/environment.ts), the services it starts, and a Redis
 * connection for its own reads and floors. `close()` stops the services and removes it all.
 */
export interface BenchStack {
  readonly environment: TestEnvironment;
  readonly env: Record<string, string>;
  readonly redis: Redis;
  /**
   * Starts a service process on a free port, with the run's service Node flags (--profile),
   * resolved once its health check says SERVING.
   */
  start(kind: ServiceKind, timeoutMs?: number): Promise<ListeningProcess>;
  /** Starts a floor server process (bench/floors/<name>) with this stack's environment. */
  startFloor(name: string, env?: Record<string, string>): Promise<ListeningProcess>;
  close(): Promise<void>;
}

/** `overrides`: extra service configuration (e.g. MAX_OUTPUT_BYTES). */
export async function createBenchStack(ctx: BenchContext, overrides: Record<string, string> = {}): Promise<BenchStack> {
  const environment = await createTestEnvironment({ overrides: { S3_ENDPOINT: ctx.s3Endpoint, ...overrides } });
  const env = environment.env;
  const redis = new Redis(environment.config.redisUrl);
  const processes: ListeningProcess[] = [];
  const track = (p: ListeningProcess): ListeningProcess => {
    processes.push(p);
    return p;
  };
  return {
    environment,
    env,
    redis,
    async start(kind, timeoutMs = 120_000) {
      const started = track(
        await startListening({
          name: `${kind} service`,
          script: serviceScript(kind),
          env,
          nodeArgs: ctx.serviceNodeArgs,
          timeoutMs,
          owner: ctx.processes,
        }),
      );
      await waitForServing(started.address, '', timeoutMs);
      return started;
    },
    async startFloor(name, extra = {}) {
      return track(
        await startListening({
          name: `floor ${name}`,
          script: floorScript(name),
          env: { ...env, ...extra },
          owner: ctx.processes,
        }),
      );
    },
    async close() {
      for (const p of processes.reverse()) await p.stop();
      await deleteKeys(redis, `${environment.config.redisKeyPrefix}*`);
      redis.disconnect();
      await environment.close();
    },
  };
}

/** A client of each service. */
export interface ServiceClients {
  readonly command: EvaluationCommandServiceClient;
  readonly query: EvaluationQueryServiceClient;
}

/**
 * Both services started on `stack`, with a client of each on its own connection that takes
 * messages of any size and has a 16 MiB flow-control window (LARGE_MESSAGES): what the
 * scenarios that move bytes need. `closeClients` closes the clients; the stack stops the services.
 */
export async function startForBytes(stack: BenchStack): Promise<{
  readonly command: ListeningProcess;
  readonly query: ListeningProcess;
  readonly clients: ServiceClients;
  closeClients(): void;
}> {
  const command = await stack.start('command');
  const query = await stack.start('query');
  const [commandClient] = createClients(EvaluationCommandServiceClient, command.address, 1, LARGE_MESSAGES);
  const [queryClient] = createClients(EvaluationQueryServiceClient, query.address, 1, LARGE_MESSAGES);
  const clients = { command: commandClient!, query: queryClient! };
  return { command, query, clients, closeClients: () => closeAll([clients.command, clients.query]) };
}
