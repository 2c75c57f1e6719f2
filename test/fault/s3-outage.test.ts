import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import {
  EvaluationCommandServiceClient,
  type AppendLogsResponse,
} from '../../shared/generated/crucible/storage/v1/command_service';
import { EventType, LogStream } from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  OutputKind,
  type ReadLogsResponse,
  type ReadOutputResponse,
  type WatchEvaluationsResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { call, createClients, readStream, type Clients } from '../support/clients';
import { aSubmission } from '../support/requests';
import type { RunningService } from '../support/processes';
import { startPrivateStack, type PrivateStack } from '../support/private-servers';
import { cancelOpenStreams, startCommandService, startQueryService, withDatabase } from './harness';

/** Evaluations completed while S3 is down; each also appends a log segment that goes to S3. */
const DURING_OUTAGE = 12;

const sha = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

function appendLog(command: EvaluationCommandServiceClient, evalId: string, data: Buffer): Promise<AppendLogsResponse> {
  return new Promise((resolve, reject) => {
    const stream = command.appendLogs((err: ServiceError | null, response?: AppendLogsResponse) =>
      err !== null ? reject(err) : resolve(response as AppendLogsResponse),
    );
    stream.write({ header: { evalId, stream: LogStream.LOG_STREAM_STDOUT } });
    stream.write({ chunk: { offset: '0', data } });
    stream.end();
  });
}

async function readAll<T extends { chunk?: Uint8Array; data?: Uint8Array }>(
  stream: ReturnType<typeof readStream<T>>,
): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (;;) {
    try {
      const message = await stream.next();
      parts.push(Buffer.from(message.chunk ?? message.data ?? new Uint8Array()));
    } catch {
      break;
    }
  }
  const failed = await stream.finished;
  if (failed !== undefined) throw failed;
  return Buffer.concat(parts);
}

describe('fault: S3 stops during completions and log appends, then comes back', function () {
  this.timeout(180_000);
  const fallbackDir = mkdtempSync(join(tmpdir(), 'crucible-fault-fallback-'));
  let stack: PrivateStack;
  let commandService: RunningService | undefined;
  let queryService: RunningService | undefined;
  let clients: Clients | undefined;

  before(async () => {
    stack = await startPrivateStack({
      ownS3: true,
      overrides: {
        BLOB_FALLBACK_DIR: fallbackDir,
        BLOB_FALLBACK_RETRY_MS: '500',
        BLOB_MOVER_INTERVAL_MS: '200',
        // Outputs and segments above 1 KiB are blobs: every one of them goes through the outage.
        INLINE_OUTPUT_MAX_BYTES: '1024',
      },
    });
    commandService = await startCommandService(stack.env);
    queryService = await startQueryService(stack.env);
    clients = createClients(commandService.address, queryService.address);
  });

  after(async () => {
    cancelOpenStreams();
    clients?.close();
    await queryService?.stop();
    await commandService?.stop();
    await stack?.close();
    rmSync(fallbackDir, { recursive: true, force: true });
  });

  it('loses no byte: every write is accepted, read back during the outage, moved to S3 after it, identical', async () => {
    if (clients === undefined || stack.s3 === undefined) throw new Error('set-up failed');
    const { command, query } = clients;
    const moves = readStream<WatchEvaluationsResponse>(
      query.watchEvaluations({ afterPosition: '0', statuses: [], evalIds: [] }),
    );

    await stack.s3.stop();
    const written = new Map<string, { output: Buffer; log: Buffer }>();
    for (let i = 0; i < DURING_OUTAGE; i += 1) {
      const evalId = `outage-${i}`;
      const output = randomBytes(2048 + i * 997);
      const log = randomBytes(1500 + i * 311);
      await call(command, command.submitEvaluation, aSubmission({ evalId, timeoutSeconds: 30 }));
      await call(command, command.startEvaluation, { evalId, executorId: 'x', containerId: 'c', requestId: '' });
      expect((await appendLog(command, evalId, log)).size).to.equal(String(log.length));
      await call(command, command.completeEvaluation, { evalId, exitCode: 0, output, requestId: '' });
      written.set(evalId, { output, log });
    }

    // While S3 is down, reads come from the fallback store (the query service can read it here).
    const during = await call(query, query.getEvaluation, { evalId: 'outage-0', minPosition: '1' });
    expect(during.evaluation?.outputLocation).to.be.oneOf(['file', 's3']);
    const first = written.get('outage-0');
    const readDuring = await readAll(
      readStream<ReadOutputResponse>(
        query.readOutput({ evalId: 'outage-0', kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' }),
      ),
    );
    expect(sha(readDuring)).to.equal(sha(first?.output ?? Buffer.alloc(0)));

    await stack.s3.start();
    // Every blob written during the outage is moved: one EVENT_TYPE_BLOB_MOVED each (awaited on the firehose).
    let moved = 0;
    while (moved < 2 * DURING_OUTAGE) {
      const message = await moves.next();
      if (message.update?.eventType === EventType.EVENT_TYPE_BLOB_MOVED) moved += 1;
    }
    moves.cancel();

    const stillInFallback = await withDatabase(stack.databaseUrl, async (sql) => {
      const { rows } = await sql.query<{ n: number }>(
        `SELECT (SELECT count(*) FROM evaluation_bodies WHERE blob_store = 'file')::int
              + (SELECT count(*) FROM evaluation_log_segments WHERE blob_store = 'file')::int AS n`,
      );
      return rows[0]?.n;
    });
    expect(stillInFallback).to.equal(0);
    const moveEvents = await withDatabase(stack.databaseUrl, async (sql) => {
      const { rows } = await sql.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM evaluation_events WHERE event_type = 'EvaluationBlobMoved'`,
      );
      return rows[0]?.n;
    });
    expect(moveEvents, 'each blob moved once').to.equal(2 * DURING_OUTAGE);

    for (const [evalId, { output, log }] of written) {
      const readOutput = await readAll(
        readStream<ReadOutputResponse>(
          query.readOutput({ evalId, kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' }),
        ),
      );
      expect(sha(readOutput), `${evalId} output`).to.equal(sha(output));
      const readLog = await readAll(
        readStream<ReadLogsResponse>(
          query.readLogs({ evalId, stream: LogStream.LOG_STREAM_STDOUT, offset: '0', length: '0', follow: false }),
        ),
      );
      expect(sha(readLog), `${evalId} log`).to.equal(sha(log));
      // In S3 now: a presigned URL serves the same bytes.
      const signed = await call(query, query.getOutputUrl, { evalId, kind: OutputKind.OUTPUT_KIND_OUTPUT });
      const fetched = Buffer.from(await (await fetch(signed.url)).arrayBuffer());
      expect(sha(fetched), `${evalId} by URL`).to.equal(sha(output));
    }
    const left = readdirSync(fallbackDir, { recursive: true, encoding: 'utf8' }).filter((name) =>
      /\/(output|stdout)\/[0-9a-f]{64}$/.test(name),
    );
    expect(left, 'the fallback store is emptied as blobs move').to.deep.equal([]);
  });
});
