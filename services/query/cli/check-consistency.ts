import { createRedisClient, redisTargetOf } from '../../../shared/redis';
import { loadConfig } from '../../../shared/config';
import { createPool } from '../../../shared/postgres';
import { exitOnFailure } from '../../../shared/runtime';
import { createPostgresEvaluationSource } from '../postgres/event-log';
import { checkConsistency } from '../projection/consistency-check';
import { pastHotRetention } from '../read-models/hot-retention';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { createKeyLayout } from '../read-models/keys';

/**
 * `npm run check-consistency`: compares every evaluation in PostgreSQL with the Redis read
 * models (each partition at its own checkpoint, so it can run while the services do), prints
 * every difference, and exits 1 when there is any (0 when none, 2 on bad configuration).
 */
async function main(): Promise<number> {
  const config = loadConfig(process.env);
  const pool = createPool({
    url: config.queryDatabaseUrl,
    readOnly: true,
    applicationName: 'crucible-check-consistency',
    poolSize: 2,
    session: config.postgres,
  });
  const redis = createRedisClient(redisTargetOf(config), { maxRetriesPerRequest: 1 });
  try {
    const layout = createKeyLayout(config.redisKeyPrefix, config.readModelPartitions, config.indexedMetadataKeys);
    const { hotMs, hotSweepIntervalMs } = config.retention;
    const now = Date.now();
    const report = await checkConsistency({
      source: createPostgresEvaluationSource(pool),
      redis,
      layout,
      // As the query service sweeps: with HOT_SWEEP_INTERVAL_SECONDS 0, nothing leaves Redis.
      ...(hotSweepIntervalMs > 0 ? { keepsOut: (state: Evaluation) => pastHotRetention(state, now, hotMs) } : {}),
    });
    for (const difference of report.differences) process.stdout.write(`${difference}\n`);
    process.stdout.write(
      `checked ${report.evaluations} evaluations at checkpoints ${report.partitionCheckpoints.join(', ')}: ` +
        `${report.differences.length === 0 ? 'no differences' : `${report.differences.length} differences`}\n`,
    );
    return report.differences.length === 0 ? 0 : 1;
  } finally {
    redis.disconnect();
    await pool.end();
  }
}

main().then((code) => process.exit(code), exitOnFailure);
