import { S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../config';
import type { Logger } from '../logging';

type SdkLog = (...parts: unknown[]) => void;

/** Text of what the SDK logs: a command's record (with its input, a whole body included) comes down to its name and error. */
function describe(part: unknown): string {
  if (typeof part === 'string') return part;
  if (part instanceof Error) return part.message;
  const { commandName, error } = (part ?? {}) as { commandName?: unknown; error?: unknown };
  if (typeof commandName === 'string') return `${commandName}${error instanceof Error ? `: ${error.message}` : ''}`;
  return Object.prototype.toString.call(part);
}

/**
 * Our logger behind the SDK's logger interface. Its warnings go to the JSON log; its records of
 * every command (info) are dropped, and those of failed ones (error) go to debug: the caller
 * already answers and logs the failure in its own terms (UNAVAILABLE, a cancelled upload).
 */
function sdkLogger(logger: Logger): { debug: SdkLog; info: SdkLog; warn: SdkLog; error: SdkLog } {
  const detail = (parts: unknown[]): { detail: string } => ({ detail: parts.map(describe).join(' ') });
  return {
    debug: () => undefined,
    info: () => undefined,
    warn: (...parts) => logger.warn('s3 client', detail(parts)),
    error: (...parts) => logger.debug('s3 client: command failed', detail(parts)),
  };
}

const S3_CONNECT_TIMEOUT_MS = 3_000;
const S3_IDLE_SOCKET_TIMEOUT_MS = 60_000;
/** Connections per client: past them requests queue (the SDK warns when they pile up). */
const S3_MAX_SOCKETS = 64;

export interface S3ClientOptions {
  /** Connections in the pool; 64 unless given (a test makes the pool small to fill it). */
  readonly maxSockets?: number;
}

/**
 * Creates an S3 client from the validated config; the SDK's warnings go to `logger` when given
 * (otherwise to the console). For s3rver (and other servers without aws-chunked support) the
 * config turns checksums to WHEN_REQUIRED: with the SDK default a streamed body is stored with
 * its chunk framing, i.e. corrupted. Real S3 keeps the defaults.
 */
export function createS3Client(config: S3Config, logger?: Logger, options: S3ClientOptions = {}): S3Client {
  const maxSockets = options.maxSockets ?? S3_MAX_SOCKETS;
  return new S3Client({
    ...(logger !== undefined ? { logger: sdkLogger(logger) } : {}),
    region: config.region,
    ...(config.endpoint !== '' ? { endpoint: config.endpoint } : {}),
    forcePathStyle: config.forcePathStyle,
    requestChecksumCalculation: config.checksumMode,
    responseChecksumValidation: config.checksumMode,
    ...(config.accessKeyId !== ''
      ? { credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey } }
      : {}),
    // Fail fast when the S3 server is down: the command answers UNAVAILABLE and the executor retries.
    maxAttempts: 2,
    requestHandler: {
      connectionTimeout: S3_CONNECT_TIMEOUT_MS,
      // A socket that moves no byte this long is closed: an upload whose client stalls gives
      // its S3 connection back instead of holding one of the pool's sockets for good. (A
      // ReadOutput whose client stops reading gives it back sooner: handlers/read-output.ts.)
      socketTimeout: S3_IDLE_SOCKET_TIMEOUT_MS,
      httpAgent: { keepAlive: true, maxSockets },
      httpsAgent: { keepAlive: true, maxSockets },
    },
  });
}

/**
 * Tells `observe` how long each of the client's commands took and whether it succeeded (an SDK
 * middleware around the whole command, its retries included).
 */
export function observeS3Requests(
  client: S3Client,
  observe: (operation: string, seconds: number, ok: boolean) => void,
): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const started = process.hrtime.bigint();
      const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9;
      const operation = typeof context.commandName === 'string' ? context.commandName : 'unknown';
      try {
        const result = await next(args);
        observe(operation, seconds(), true);
        return result;
      } catch (err) {
        observe(operation, seconds(), false);
        throw err;
      }
    },
    { step: 'initialize', name: 'crucibleRequestMetrics' },
  );
}
