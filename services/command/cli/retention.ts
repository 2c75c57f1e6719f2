import { createS3BlobStore } from '../../../shared/blobs';
import { loadConfig } from '../../../shared/config';
import { createLogger } from '../../../shared/logging';
import { createPool } from '../../../shared/postgres';
import { exitOnFailure } from '../../../shared/runtime';
import { createS3Client } from '../../../shared/s3';
import { runRetention } from '../application/retention';
import { createPostgresRetentionStore } from '../postgres/retention-store';

const USAGE = `usage: npm run retention -- [--dry-run] [--limit N] [--as-of TIME [--early]]

Runs the retention job once over every tier (docs/operations.md "Retention"): log bytes older
than LOG_HOT_RETENTION move from PostgreSQL to S3, logs older than LOG_RETENTION are deleted,
terminal evaluations untouched for ACTIVE_RETENTION are archived to S3 and leave the hot
tables, and security records older than SECURITY_RETENTION are purged. Prints one line per
evaluation archived, then the report (also kept in the retention_runs table). Safe to stop at
any point and run again. --dry-run changes nothing and reports what the first batch of each
step would do; --limit caps the evaluations archived (default 10000); --as-of judges ages as
if it were TIME (ISO 8601), not now: a time to come needs --dry-run (what a run then will do)
or --early (do it now, as if every retention were that much shorter). Connects with
MIGRATION_DATABASE_URL: the services' own roles may delete nothing. The command service runs
the same job every RETENTION_INTERVAL_SECONDS when that is set.

exit status: 0 done, 3 another run holds the retention lock, 64 bad arguments`;

const VALUED = ['--limit', '--as-of'];
const FLAGS = ['--dry-run', '--early'];

function limitOf(args: readonly string[]): number | undefined {
  const at = args.indexOf('--limit');
  if (at < 0) return undefined;
  const limit = Number(args[at + 1]);
  if (!Number.isSafeInteger(limit) || limit < 1) throw new UsageError('--limit must be a whole number from 1');
  return limit;
}

function asOf(args: readonly string[]): Date {
  const at = args.indexOf('--as-of');
  if (at < 0) return new Date();
  const text = args[at + 1] ?? '';
  const time = new Date(text);
  if (!/^\d{4}-\d\d-\d\dT/.test(text) || Number.isNaN(time.getTime()))
    throw new UsageError(`--as-of must be an ISO 8601 time (2027-03-01T00:00:00Z), not ${JSON.stringify(text)}`);
  return time;
}

class UsageError extends Error {}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const unknown = args.filter(
    (a, i) => !FLAGS.includes(a) && !VALUED.includes(a) && !VALUED.includes(args[i - 1] ?? ''),
  );
  let limit: number | undefined;
  let now: Date;
  try {
    if (unknown.length > 0) throw new UsageError(`unknown argument ${unknown.join(', ')}`);
    limit = limitOf(args);
    now = asOf(args);
    // Ahead of time, a run would delete logs and security records before their retention ends.
    if (now.getTime() > Date.now() && !args.includes('--dry-run') && !args.includes('--early'))
      throw new UsageError(
        '--as-of a time to come archives and deletes early: add --dry-run to see what a run then will do, or --early to do it now',
      );
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message}\n${USAGE}\n`);
    return 64;
  }
  const config = loadConfig(process.env);
  const logger = createLogger(config.logLevel, { service: 'retention' });
  const dryRun = args.includes('--dry-run');
  const pool = createPool({
    url: config.migrationDatabaseUrl,
    applicationName: 'crucible-retention',
    poolSize: 2,
    session: config.postgres,
  });
  const s3 = createS3Client(config.s3);
  try {
    const store = createPostgresRetentionStore(pool);
    const report = await store.exclusively(() =>
      runRetention({
        store,
        blobs: createS3BlobStore(s3, config.s3.bucket, config.s3.sse, config.s3.multipart),
        policy: config.retention,
        now,
        // With --as-of, what the run writes still says when it ran.
        recordedAt: new Date(),
        dryRun,
        logger,
        ...(limit !== undefined ? { limit } : {}),
        onArchived: (evalId) => process.stdout.write(`archived ${evalId}\n`),
      }),
    );
    if (report === undefined) {
      process.stderr.write('another retention run holds the lock (pg_advisory_lock); nothing was done\n');
      return 3;
    }
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return 0;
  } finally {
    s3.destroy();
    await pool.end();
  }
}

main().then((code) => process.exit(code), exitOnFailure);
