import { join } from 'node:path';
import {
  credentials,
  loadPackageDefinition,
  Metadata,
  status,
  type Client,
  type ClientReadableStream,
  type ChannelCredentials,
  type ServiceClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { startListening } from '../../tools/process';

/**
 * End-to-end helpers: the services as real processes (what `npm run start:*` runs), and the
 * standard gRPC health check to know when one serves.
 */

export type ServiceKind = 'command' | 'query';

export interface RunningService {
  readonly port: number;
  /** host:port to dial, e.g. "127.0.0.1:43125". */
  readonly address: string;
  readonly pid: number;
  /**
   * Sends `signal` and resolves with the exit code (null if a signal ended the process).
   * Rejects, after SIGKILL, if the process is still there after `stopTimeoutMs`.
   */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Kills the process without letting it shut down (crash tests). */
  kill9(): Promise<void>;
  /** Everything the process wrote so far, stdout and stderr interleaved. */
  logs(): string;
}

export interface StartOptions {
  /** How long to wait for the "listening" log line (default 20 s). */
  readonly startTimeoutMs?: number;
  /** How long `stop()` waits before SIGKILL (default 20 s). */
  readonly stopTimeoutMs?: number;
}

const PROJECT_ROOT = join(__dirname, '..', '..', '..');

/**
 * Starts `node dist/services/<kind>/main.js` with the test's environment (ports default to 0,
 * i.e. free ones) and resolves once it logged `{"msg":"listening","port":...}`. The caller
 * owns its stop (an `after` hook), as with every process tools/process starts.
 */
export async function startService(
  kind: ServiceKind,
  env: Record<string, string>,
  options: StartOptions = {},
): Promise<RunningService> {
  const stopTimeoutMs = options.stopTimeoutMs ?? 20_000;
  const { child, port } = await startListening(
    `${kind} service`,
    {
      command: process.execPath,
      args: ['--enable-source-maps', join(PROJECT_ROOT, 'dist', 'services', kind, 'main.js')],
      cwd: PROJECT_ROOT,
      env: { ...process.env, COMMAND_PORT: '0', QUERY_PORT: '0', ...env },
      // Tests read a service's whole log (what it said at start-up, too).
      captureLimit: Number.POSITIVE_INFINITY,
    },
    options.startTimeoutMs ?? 20_000,
  );
  let killed = false;
  return {
    port,
    address: `127.0.0.1:${port}`,
    pid: child.pid,
    async stop(signal = 'SIGTERM') {
      const status = await child.stop(signal, stopTimeoutMs);
      // SIGKILL that nobody sent on purpose: child.stop's, after the grace period.
      if (!killed && signal !== 'SIGKILL' && status.signal === 'SIGKILL') {
        throw new Error(
          `${kind} service did not exit within ${stopTimeoutMs / 1000}s of ${signal} (killed); its output:\n${child.output()}`,
        );
      }
      return status.code;
    },
    kill9: async () => {
      killed = true;
      await child.stop('SIGKILL', 0);
    },
    logs: () => child.output(),
  };
}

interface HealthClient extends Client {
  Watch(request: { service: string }, metadata: Metadata): ClientReadableStream<{ status: string }>;
}

let healthClientConstructor: ServiceClientConstructor | undefined;

function createHealthClient(address: string, channel: ChannelCredentials): HealthClient {
  if (healthClientConstructor === undefined) {
    const definition = loadSync(healthProtoPath, { keepCase: true, enums: String, longs: String, defaults: true });
    const grpcObject = loadPackageDefinition(definition) as unknown as {
      grpc: { health: { v1: { Health: ServiceClientConstructor } } };
    };
    healthClientConstructor = grpcObject.grpc.health.v1.Health;
  }
  return new healthClientConstructor(address, channel) as unknown as HealthClient;
}

/**
 * Resolves when `serviceName` at `address` reports SERVING through the health Watch stream
 * (the server pushes each change; nothing polls). Rejects after `timeoutMs` with the last
 * status seen. `channel`: TLS for a service that serves it (health needs no credential).
 */
export function waitForServing(
  address: string,
  serviceName: string,
  timeoutMs = 20_000,
  channel: ChannelCredentials = credentials.createInsecure(),
): Promise<void> {
  const client = createHealthClient(address, channel);
  // waitForReady: the server may still be binding; the call waits for the connection.
  const stream = client.Watch({ service: serviceName }, new Metadata({ waitForReady: true }));
  let last = 'no status yet';
  return new Promise<void>((resolve, reject) => {
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      stream.removeAllListeners('data');
      stream.cancel();
      client.close();
      if (err === undefined) resolve();
      else reject(err);
    };
    const timer = setTimeout(
      () => finish(new Error(`${serviceName} at ${address} not SERVING within ${timeoutMs / 1000}s (${last})`)),
      timeoutMs,
    );
    stream.on('data', (message: { status: string }) => {
      last = `last status ${message.status}`;
      if (message.status === 'SERVING') finish();
    });
    stream.on('error', (err: ServiceError) => {
      if (err.code === status.CANCELLED) return;
      finish(new Error(`health watch of ${serviceName} at ${address} failed: ${err.message} (${last})`));
    });
  });
}
