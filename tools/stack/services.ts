import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { StackContext } from './context';
import { StackError } from './progress';
import { startListening, supervise, type Child, type Supervised } from '../process';
import { errorMessage } from './processes';

export type ServiceKind = 'command' | 'query';

/** Where the built entry point of a service is. */
function serviceEntry(projectRoot: string, kind: ServiceKind): string {
  return join(projectRoot, 'dist', 'services', kind, 'main.js');
}

/** Fails before anything is started when a service has not been built. */
export function assertBuilt(projectRoot: string, kinds: readonly ServiceKind[]): void {
  const missing = kinds.map((k) => serviceEntry(projectRoot, k)).filter((entry) => !existsSync(entry));
  if (missing.length > 0) {
    throw new StackError(
      `not built: ${missing.map((entry) => relative(projectRoot, entry)).join(', ')}`,
      'build first: npm run build (make up does)',
    );
  }
}

/**
 * Runs a service as a supervised child whose JSON log lines go straight to our stdout, and
 * resolves once it listens. When it exits on its own it is started again (tools/process:
 * exponential backoff, reset after a minute of service), the other services untouched. It is
 * stopped with SIGTERM and given its shutdown grace period (plus a margin) before SIGKILL.
 */
export async function startService(
  kind: ServiceKind,
  env: NodeJS.ProcessEnv,
  graceMs: number,
  ctx: StackContext,
): Promise<void> {
  assertBuilt(ctx.projectRoot, [kind]);
  const entry = serviceEntry(ctx.projectRoot, kind);
  const name = `${kind} service`;
  const start = async (): Promise<Child> => {
    const { child } = await startListening(
      name,
      {
        command: process.execPath,
        args: ['--enable-source-maps', entry],
        cwd: ctx.projectRoot,
        env,
        detached: true,
        output: 'forward',
      },
      START_TIMEOUT_MS,
    );
    return child;
  };
  let service: Supervised;
  try {
    service = await supervise({
      name,
      start,
      log: (line) => ctx.progress.warn(line),
      onStarted: (child) => ctx.progress.ok(`${name} listening (pid ${child.pid})`),
    });
  } catch (err) {
    throw new StackError(errorMessage(err), 'see its log lines above; `make up` restarts it once it has started');
  }
  ctx.resources.add({ name, stop: () => service.stop('SIGTERM', graceMs + 5000) });
}

/** How long a service may take to bind (it catches up after it listens). */
const START_TIMEOUT_MS = 60_000;
