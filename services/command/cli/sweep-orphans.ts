import { createFileBlobStore, createS3BlobStore } from '../../../shared/blobs';
import { loadConfig } from '../../../shared/config';
import { createPool } from '../../../shared/postgres';
import { exitOnFailure } from '../../../shared/runtime';
import { createS3Client } from '../../../shared/s3';
import { sweepAllOrphans } from '../application/orphan-sweeper';
import { createPostgresBlobReferences } from '../postgres/blob-references';

const USAGE = `usage: npm run sweep-orphans -- [--dry-run] [--grace-seconds N]

Deletes the blobs (in S3 and in BLOB_FALLBACK_DIR) that no body or log segment row refers to
and that are older than ORPHAN_GRACE_SECONDS (or --grace-seconds): uploads whose command then
failed or was refused, fallback copies left after a move. --dry-run prints them and deletes
nothing. The command service does the same every ORPHAN_SWEEP_INTERVAL_SECONDS.`;

function graceOf(args: readonly string[], fallback: number): number {
  const at = args.indexOf('--grace-seconds');
  if (at < 0) return fallback;
  const seconds = Number(args[at + 1]);
  if (!Number.isSafeInteger(seconds) || seconds < 0) throw new Error(`--grace-seconds must be 0 or more\n${USAGE}`);
  return seconds * 1000;
}

/** `npm run sweep-orphans`: one sweep, its report on stdout (one line per orphan, then totals). */
async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const unknown = args.filter(
    (a, i) => a.startsWith('--') && a !== '--dry-run' && a !== '--grace-seconds' && args[i - 1] !== '--grace-seconds',
  );
  if (unknown.length > 0) {
    process.stderr.write(`unknown option ${unknown.join(', ')}\n${USAGE}\n`);
    return 2;
  }
  const config = loadConfig(process.env);
  const dryRun = args.includes('--dry-run');
  const pool = createPool({
    url: config.databaseUrl,
    applicationName: 'crucible-sweep-orphans',
    poolSize: 2,
    session: config.postgres,
  });
  const s3 = createS3Client(config.s3);
  try {
    const reports = await sweepAllOrphans({
      homes: {
        s3: createS3BlobStore(s3, config.s3.bucket, config.s3.sse),
        file: config.blobFallback.dir !== '' ? createFileBlobStore(config.blobFallback.dir) : undefined,
      },
      references: createPostgresBlobReferences(pool),
      graceMs: graceOf(args, config.orphans.graceMs),
      now: new Date(),
      dryRun,
    });
    for (const report of reports) {
      for (const orphan of report.orphans) {
        process.stdout.write(
          `${dryRun ? 'would delete' : 'deleted'} ${report.home}:${orphan.key} ${orphan.size} B, modified ${orphan.modifiedAt.toISOString()}\n`,
        );
      }
      process.stdout.write(
        `${report.home}: ${report.examined} blobs examined, ${report.orphans.length} orphans (${report.bytes} B)${dryRun ? ', dry run: nothing deleted' : ' deleted'}\n`,
      );
    }
    return 0;
  } finally {
    s3.destroy();
    await pool.end();
  }
}

main().then((code) => process.exit(code), exitOnFailure);
