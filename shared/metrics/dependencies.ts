import { Counter, Histogram, type Registry } from 'prom-client';
import { gaugeOf } from './registry';

/** What a `pg` Pool tells of itself (its counts are plain properties). */
interface PoolCounts {
  readonly totalCount: number;
  readonly idleCount: number;
  readonly waitingCount: number;
}

/** A PostgreSQL pool's connections in use and idle, and the queries waiting for one. */
export function watchPostgresPool(registry: Registry, pool: PoolCounts): void {
  gaugeOf(
    registry,
    {
      name: 'crucible_postgres_pool_connections',
      help: 'PostgreSQL connections of the pool, in use or idle',
      labelNames: ['state'],
    },
    () => [
      { labels: { state: 'in_use' }, value: pool.totalCount - pool.idleCount },
      { labels: { state: 'idle' }, value: pool.idleCount },
    ],
  );
  gaugeOf(
    registry,
    { name: 'crucible_postgres_pool_waiting', help: 'Queries waiting for a PostgreSQL connection of the pool' },
    () => pool.waitingCount,
  );
}

/** Counts a Redis connection's errors (each failed connect or command it reports), by connection. */
export function redisErrorCounter(registry: Registry): (connection: string) => void {
  const errors = new Counter({
    name: 'crucible_redis_errors_total',
    help: 'Errors a Redis connection reported (failed connects and commands), by connection',
    labelNames: ['connection'],
    registers: [registry],
  });
  return (connection) => errors.inc({ connection });
}

/** How long each S3 request took, by operation and outcome. */
export function s3RequestObserver(registry: Registry): (operation: string, seconds: number, ok: boolean) => void {
  const requests = new Histogram({
    name: 'crucible_s3_request_duration_seconds',
    help: 'S3 requests (each SDK command, retries included), by operation and outcome',
    labelNames: ['operation', 'outcome'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  return (operation, seconds, ok) => requests.observe({ operation, outcome: ok ? 'ok' : 'error' }, seconds);
}
