import { createRedisClient, redisTargetOf } from '../../../shared/redis';
import { loadConfig } from '../../../shared/config';
import { createLogger } from '../../../shared/logging';
import { createPool } from '../../../shared/postgres';
import { exitOnFailure } from '../../../shared/runtime';
import { createPostgresEventLog } from '../postgres/event-log';
import { rebuildReadModels } from '../projection/rebuild';
import { createKeyLayout } from '../read-models/keys';
import { createRedisProjectionStore } from '../redis/projection-store';

/**
 * `npm run rebuild-read-models`: deletes this prefix's read-model keys and projects the whole
 * event log again from position 0 (projection/rebuild.ts: the next batch is read from
 * PostgreSQL and folded while the last ones are written to Redis). Prints progress about once
 * a second, and events per second.
 *
 * Running query replicas need no restart: the rebuild holds a fence over the read models
 * (redis/rebuild-fence.ts) that keeps their writes out while it deletes and rewrites; they see
 * the checkpoints drop, stop serving (NOT_SERVING) and catch up once it is done. A second
 * rebuild is refused while one runs. Live streams should be expected to end and resume.
 */
async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const logger = createLogger(config.logLevel === 'debug' ? 'debug' : 'info', { service: 'rebuild-read-models' });
  const pool = createPool({
    url: config.queryDatabaseUrl,
    readOnly: true,
    applicationName: 'crucible-rebuild',
    poolSize: 2,
    session: config.postgres,
  });
  const redis = createRedisClient(redisTargetOf(config), { maxRetriesPerRequest: 1 });
  try {
    const layout = createKeyLayout(config.redisKeyPrefix, config.readModelPartitions, config.indexedMetadataKeys);
    const eventLog = createPostgresEventLog(pool);
    let reported = 0;
    const result = await rebuildReadModels({
      redis,
      layout,
      eventLog,
      store: createRedisProjectionStore(redis, layout, config.streams.changeLogRetention),
      logger,
      // About once a second: batches are small.
      onProgress: (applied, position) => {
        if (Date.now() - reported < 1000) return;
        reported = Date.now();
        process.stdout.write(`applied ${applied} events (position ${position})\n`);
      },
    });
    const rate = result.seconds > 0 ? Math.round(result.events / result.seconds) : result.events;
    process.stdout.write(
      `deleted ${result.deletedKeys} keys; rebuilt ${result.events} events up to position ${result.checkpoint} ` +
        `in ${result.seconds.toFixed(2)} s (${rate} events/s)\n`,
    );
  } finally {
    redis.disconnect();
    await pool.end();
  }
}

main().then(() => process.exit(0), exitOnFailure);
