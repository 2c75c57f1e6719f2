import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createS3rver } from '../../tools/stack/local-s3';
import { announceListening } from './processes';

/**
 * Entry point: the bench's own s3rver, in a process of its own (its CPU is not the bench
 * client's) with its files in a temporary folder removed on SIGTERM. Other users of the
 * machine's S3 server neither disturb the S3 rows nor see the bench's objects.
 */
async function main(): Promise<void> {
  const directory = mkdtempSync(join(tmpdir(), 'crucible-bench-s3-'));
  const server = createS3rver({ address: '127.0.0.1', port: 0, directory, silent: true });
  const { port } = await server.run();
  announceListening(port);
  process.once('SIGTERM', () => {
    void server.close().finally(() => {
      rmSync(directory, { recursive: true, force: true });
      process.exit(0);
    });
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
