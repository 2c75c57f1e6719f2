import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import {
  credentials,
  loadPackageDefinition,
  Metadata,
  status,
  type Client,
  type ClientReadableStream,
  type ServiceClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';

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

// A spec that fails or is interrupted half-way must not leave services running: whatever is
// still alive when mocha's process exits is killed.
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Starts `node dist/services/<kind>/main.js` with the test's environment (ports default to 0,
 * i.e. free ones) and resolves once it logged `{"msg":"listening","port":...}`.
 */
export function startService(
  kind: ServiceKind,
  env: Record<string, string>,
  options: StartOptions = {},
): Promise<RunningService> {
  const startTimeoutMs = options.startTimeoutMs ?? 20_000;
  const stopTimeoutMs = options.stopTimeoutMs ?? 20_000;
  const child = spawn(
    process.execPath,
    ['--enable-source-maps', join(PROJECT_ROOT, 'dist', 'services', kind, 'main.js')],
    {
      cwd: PROJECT_ROOT,
      env: { ...process.env, COMMAND_PORT: '0', QUERY_PORT: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  running.add(child);
  let output = '';
  let partialLine = '';
  let onListening: ((port: number) => void) | undefined;
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
    const lines = (partialLine + chunk).split('\n');
    partialLine = lines.pop() ?? '';
    for (const line of lines) {
      const port = listeningPort(line);
      if (port !== undefined) onListening?.(port);
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  const describe = (what: string): string => `${kind} service ${what}; its output:\n${output || '(none)'}`;

  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), stopTimeoutMs)));
    const result = await Promise.race([exited, timedOut]);
    clearTimeout(timer);
    if (result === 'timeout') {
      child.kill('SIGKILL');
      await exited;
      throw new Error(describe(`did not exit within ${stopTimeoutMs / 1000}s of ${signal} (killed)`));
    }
    return result.code;
  };

  return new Promise<RunningService>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(describe(`did not log "listening" within ${startTimeoutMs / 1000}s (killed)`)));
    }, startTimeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(describe(`could not be started: ${err.message}`)));
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(describe(`exited (${signal ?? `code ${String(code)}`}) before listening`)));
    });
    onListening = (port) => {
      clearTimeout(timer);
      onListening = undefined;
      resolve({
        port,
        address: `127.0.0.1:${port}`,
        pid: child.pid ?? -1,
        stop,
        kill9: async () => {
          child.kill('SIGKILL');
          await exited;
        },
        logs: () => output,
      });
    };
  });
}

function listeningPort(line: string): number | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const record = JSON.parse(line) as { msg?: unknown; port?: unknown };
    return record.msg === 'listening' && typeof record.port === 'number' ? record.port : undefined;
  } catch {
    return undefined;
  }
}

interface HealthClient extends Client {
  Watch(request: { service: string }, metadata: Metadata): ClientReadableStream<{ status: string }>;
}

let healthClientConstructor: ServiceClientConstructor | undefined;

function createHealthClient(address: string): HealthClient {
  if (healthClientConstructor === undefined) {
    const definition = loadSync(healthProtoPath, { keepCase: true, enums: String, longs: String, defaults: true });
    const grpcObject = loadPackageDefinition(definition) as unknown as {
      grpc: { health: { v1: { Health: ServiceClientConstructor } } };
    };
    healthClientConstructor = grpcObject.grpc.health.v1.Health;
  }
  return new healthClientConstructor(address, credentials.createInsecure()) as unknown as HealthClient;
}

/**
 * Resolves when `serviceName` at `address` reports SERVING through the health Watch stream
 * (the server pushes each change; nothing polls). Rejects after `timeoutMs` with the last
 * status seen.
 */
export function waitForServing(address: string, serviceName: string, timeoutMs = 20_000): Promise<void> {
  const client = createHealthClient(address);
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
