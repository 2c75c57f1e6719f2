import type { Redis } from 'ioredis';
import { Evaluation } from '../../shared/generated/crucible/storage/v1/evaluation';

/**
 * Floor for lookups without gRPC: raw ioredis HGETALL of a hash holding an evaluation's
 * fields (the same evaluation as the service returns, one hash per id under `keyPrefix`).
 */
export async function seedRedisRecords(
  redis: Redis,
  keyPrefix: string,
  evaluations: readonly Evaluation[],
): Promise<void> {
  const pipeline = redis.pipeline();
  for (const evaluation of evaluations) {
    const fields = Object.entries(Evaluation.toJSON(evaluation) as Record<string, unknown>).map(
      ([k, v]): [string, string] => [k, typeof v === 'string' ? v : JSON.stringify(v)],
    );
    pipeline.hset(`${keyPrefix}${evaluation.evalId}`, Object.fromEntries(fields));
  }
  await pipeline.exec();
}

export async function redisLookup(redis: Redis, keyPrefix: string, evalId: string): Promise<Record<string, string>> {
  const record = await redis.hgetall(`${keyPrefix}${evalId}`);
  if (record.evalId === undefined) throw new Error(`no record for ${evalId}`);
  return record;
}
