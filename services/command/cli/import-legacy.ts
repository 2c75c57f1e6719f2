import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { credentials, Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import { loadConfig } from '../../../shared/config';
import { EvaluationCommandServiceClient } from '../../../shared/generated/crucible/storage/v1/command_service';
import { FailureReason } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { exitOnFailure } from '../../../shared/runtime';
import { LEGACY_EXECUTOR, legacyEvaluation, LegacyFormatError, type LegacyCommand } from './legacy-format';

const USAGE = `usage: npm run import-legacy -- DIR [--address HOST:PORT] [--tls] [--concurrency N]

Imports the original platform's file store (DIR/evaluations/<id>.json, with DIR/events/<id>.json
and DIR/metadata/<id>.json when present; docs/operations.md) through the command service, as the
commands an executor would have sent: the read models, histories and counts come out as for any
evaluation. Each command carries a request id derived from the evaluation's id, so running it
again (after a failure, or to resume) repeats nothing. A file that cannot be imported is
reported with its path and why, and the rest goes on.

  --address      the command service (default HOST:COMMAND_PORT, 127.0.0.1 for 0.0.0.0)
  --tls          connect with TLS (the system's CAs)
  --concurrency  evaluations imported at once (default 8)
  CRUCIBLE_TOKEN a bearer token for AUTH_MODE=jwt (an admin's: it starts and ends evaluations)

Exit status: 0 when every file was imported, 2 when some were skipped (listed), 1 when the
service stayed unreachable (run it again to resume), 64 for a usage error.`;

/** Tries of a command the service refused as unavailable before the import stops. */
const ATTEMPTS = 6;
const RETRYABLE = new Set<number>([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED]);
/** A usage error (sysexits' EX_USAGE): apart from 2, "some files were skipped". */
const USAGE_ERROR = 64;

/**
 * Worth trying again: the service was unavailable, or refused for now (RESOURCE_EXHAUSTED with
 * a RetryInfo, as a rate limit does; without one it is a request too large, which stays so).
 */
function retryable(err: ServiceError): boolean {
  if (RETRYABLE.has(err.code)) return true;
  return err.code === Status.RESOURCE_EXHAUSTED && err.metadata?.get('grpc-status-details-bin').length > 0;
}

/** The service stayed unavailable: the import stops (and resumes when run again). */
class Unreachable extends Error {
  override name = 'Unreachable';
}

interface Options {
  readonly dir: string;
  readonly address: string;
  readonly tls: boolean;
  readonly concurrency: number;
}

function parseArgs(args: readonly string[]): Options | string {
  let dir: string | undefined;
  let address: string | undefined;
  let tls = false;
  let concurrency = 8;
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i] as string;
    if (arg === '--address') {
      address = args[++i];
      if (address === undefined || !/^[^\s:]+:\d+$/.test(address)) return '--address must be HOST:PORT';
    } else if (arg === '--tls') tls = true;
    else if (arg === '--concurrency') {
      concurrency = Number(args[++i]);
      if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 256)
        return '--concurrency must be a whole number from 1 to 256';
    } else if (arg.startsWith('--')) return `unknown option ${arg}`;
    else if (dir === undefined) dir = arg;
    else return `one DIR only (got ${dir} and ${arg})`;
  }
  if (dir === undefined) return 'DIR is missing';
  if (!existsSync(join(dir, 'evaluations')))
    return `${dir} has no evaluations/ directory: not the old platform's file store`;
  if (address === undefined) {
    const config = loadConfig(process.env);
    address = `${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${config.commandPort}`;
  }
  return { dir, address, tls, concurrency };
}

/** Sends one command, retrying while the service is unavailable; a refusal is its error. */
function sender(client: EvaluationCommandServiceClient, token: string | undefined) {
  const once = (evalId: string, command: LegacyCommand): Promise<unknown> => {
    const metadata = new Metadata();
    if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
    const options = { deadline: new Date(Date.now() + 30_000) };
    return new Promise((resolve, reject) => {
      const done = (err: ServiceError | null, answer?: unknown): void => (err !== null ? reject(err) : resolve(answer));
      switch (command.kind) {
        case 'submit':
          client.submitEvaluation(
            {
              evalId,
              code: command.code,
              language: command.language,
              engine: command.engine,
              timeoutSeconds: command.timeoutSeconds,
              metadata: command.metadata,
              requestId: command.requestId,
            },
            metadata,
            options,
            done,
          );
          break;
        case 'start':
          client.startEvaluation(
            { evalId, executorId: LEGACY_EXECUTOR, containerId: '', requestId: command.requestId },
            metadata,
            options,
            done,
          );
          break;
        case 'complete':
          client.completeEvaluation(
            { evalId, output: command.output, exitCode: command.exitCode, requestId: command.requestId },
            metadata,
            options,
            done,
          );
          break;
        case 'fail':
          client.failEvaluation(
            {
              evalId,
              error: command.error,
              exitCode: command.exitCode,
              reason: FailureReason.FAILURE_REASON_ERROR,
              requestId: command.requestId,
            },
            metadata,
            options,
            done,
          );
          break;
        case 'cancel':
          client.cancelEvaluation(
            { evalId, reason: 'cancelled on the old platform', requestId: command.requestId },
            metadata,
            options,
            done,
          );
          break;
      }
    });
  };
  return async (evalId: string, command: LegacyCommand): Promise<void> => {
    for (let attempt = 1; ; attempt += 1) {
      try {
        await once(evalId, command);
        return;
      } catch (err) {
        const code = (err as ServiceError).code;
        if (!retryable(err as ServiceError)) throw err;
        if (attempt >= ATTEMPTS)
          throw new Unreachable(`${command.kind} of ${evalId}: ${Status[code]}: ${(err as ServiceError).details}`);
        await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** attempt));
      }
    }
  };
}

/** Progress on stderr: rewritten in place on a terminal, a line every 5 s otherwise. */
function progress(total: number): { tick(done: number, skipped: number): void; end(): void } {
  const tty = process.stderr.isTTY;
  let last = 0;
  let line = '';
  return {
    tick(done, skipped) {
      const now = Date.now();
      if (now - last < (tty ? 200 : 5000) && done < total) return;
      last = now;
      const width = 30;
      const filled = total === 0 ? width : Math.round((done / total) * width);
      line = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} files, ${skipped} skipped`;
      process.stderr.write(tty ? `\r${line}` : `${line}\n`);
    },
    end() {
      if (tty && line !== '') process.stderr.write('\n');
    },
  };
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const options = parseArgs(args);
  if (typeof options === 'string') {
    process.stderr.write(`${options}\n\n${USAGE}\n`);
    return USAGE_ERROR;
  }
  const files = readdirSync(join(options.dir, 'evaluations'))
    .filter((name) => name.endsWith('.json'))
    .sort();
  const client = new EvaluationCommandServiceClient(
    options.address,
    options.tls ? credentials.createSsl() : credentials.createInsecure(),
    { 'grpc.max_send_message_length': 128 * 1024 * 1024 },
  );
  const send = sender(client, process.env.CRUCIBLE_TOKEN);
  const bar = progress(files.length);
  const skipped: { path: string; reason: string }[] = [];
  let imported = 0;
  let done = 0;
  let stopped: Error | undefined;

  const importOne = async (name: string): Promise<void> => {
    const path = join(options.dir, 'evaluations', name);
    const companion = (kind: string): string | undefined => {
      const file = join(options.dir, kind, name);
      return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
    };
    try {
      const events = companion('events');
      const metadata = companion('metadata');
      const evaluation = legacyEvaluation(name, {
        evaluation: readFileSync(path, 'utf8'),
        ...(events !== undefined ? { events } : {}),
        ...(metadata !== undefined ? { metadata } : {}),
      });
      for (const command of evaluation.commands) {
        try {
          await send(evaluation.evalId, command);
        } catch (err) {
          if (err instanceof Unreachable) throw err;
          const refusal = err as ServiceError;
          throw new LegacyFormatError(
            `the service refused its ${command.kind}: ${Status[refusal.code] ?? refusal.code}: ${refusal.details}`,
          );
        }
      }
      imported += 1;
    } catch (err) {
      if (err instanceof Unreachable) throw err;
      // A file that cannot be read (a directory, no permission) is skipped like a malformed one.
      const unreadable = typeof (err as NodeJS.ErrnoException).code === 'string';
      if (!(err instanceof LegacyFormatError) && !unreadable) throw err;
      skipped.push({ path, reason: unreadable ? `cannot be read: ${(err as Error).message}` : (err as Error).message });
    }
  };

  // A fixed number of workers over the sorted files: a run stopped half-way left a prefix (and
  // a few in flight) imported, which the next run answers from its request ids.
  let next = 0;
  const worker = async (): Promise<void> => {
    while (stopped === undefined && next < files.length) {
      const name = files[next++] as string;
      try {
        await importOne(name);
      } catch (err) {
        stopped ??= err as Error;
        return;
      }
      done += 1;
      bar.tick(done, skipped.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, files.length) }, worker));
  bar.end();
  client.close();

  for (const { path, reason } of skipped.sort((a, b) => a.path.localeCompare(b.path)))
    process.stdout.write(`skipped ${path}: ${reason}\n`);
  process.stdout.write(
    `import-legacy: ${imported} evaluations imported (now or by an earlier run), ${skipped.length} skipped, ` +
      `${files.length - done} not reached, of ${files.length} files\n`,
  );
  if (stopped !== undefined) {
    process.stderr.write(`import-legacy: stopped: ${stopped.message}; run it again to resume\n`);
    return 1;
  }
  return skipped.length > 0 ? 2 : 0;
}

main().then((code) => {
  process.exitCode = code;
}, exitOnFailure);
