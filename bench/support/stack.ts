import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { createTestEnvironment, type TestEnvironment } from '../../test/support/environment';
import { startService, waitForServing, type RunningService, type ServiceKind } from '../../test/support/processes';
import { startListening, type ListeningProcess } from './processes';
import type { BenchContext } from './scenario';

/** The project root, from dist/bench/support. */
export const PROJECT_ROOT = resolve(__dirname, '..', '..', '..');

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
  /** `env` plus NODE_OPTIONS for service processes (--profile): for the services and their CLIs. */
  readonly serviceEnv: Record<string, string>;
  readonly redis: Redis;
  /** Starts a service process on a free port (test/support/processes.ts), resolved once SERVING. */
  start(kind: ServiceKind, timeoutMs?: number): Promise<RunningService>;
  /** Starts a floor server process (bench/floors/<name>) with this stack's environment. */
  startFloor(name: string, env?: Record<string, string>): Promise<ListeningProcess>;
  close(): Promise<void>;
}

/** `overrides`: extra service configuration (e.g. MAX_OUTPUT_BYTES). */
export async function createBenchStack(ctx: BenchContext, overrides: Record<string, string> = {}): Promise<BenchStack> {
  const environment = await createTestEnvironment({ overrides: { S3_ENDPOINT: ctx.s3Endpoint, ...overrides } });
  const env = environment.env;
  const serviceEnv = ctx.serviceNodeOptions !== undefined ? { ...env, NODE_OPTIONS: ctx.serviceNodeOptions } : env;
  const redis = new Redis(environment.config.redisUrl);
  const processes: { stop(): Promise<unknown> }[] = [];
  const track = <P extends { stop(): Promise<unknown> }>(p: P): P => {
    processes.push(p);
    return p;
  };
  return {
    environment,
    env,
    serviceEnv,
    redis,
    async start(kind, timeoutMs = 120_000) {
      const started = track(await startService(kind, serviceEnv, { startTimeoutMs: timeoutMs }));
      await waitForServing(started.address, '', timeoutMs);
      return started;
    },
    async startFloor(name, extra = {}) {
      return track(
        await startListening({ name: `floor ${name}`, script: floorScript(name), env: { ...env, ...extra } }),
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

/** Removes every key matching `pattern` (SCAN + UNLINK: never blocks Redis for long). */
export async function deleteKeys(redis: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 5000);
    if (keys.length > 0) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}
