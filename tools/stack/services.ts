import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { StackContext } from './context';
import { StackError } from './progress';
import { describeExit, startChild } from './processes';

export type ServiceKind = 'command' | 'query';

/** Where the built entry point of a service is. */
export function serviceEntry(projectRoot: string, kind: ServiceKind): string {
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
 * Runs a service as a child whose JSON log lines go straight to our stdout. It is stopped
 * with SIGTERM and given its shutdown grace period (plus a margin) before SIGKILL.
 */
export async function startService(
  kind: ServiceKind,
  env: NodeJS.ProcessEnv,
  graceMs: number,
  ctx: StackContext,
): Promise<void> {
  assertBuilt(ctx.projectRoot, [kind]);
  const entry = serviceEntry(ctx.projectRoot, kind);
  const child = await startChild({
    command: process.execPath,
    args: ['--enable-source-maps', entry],
    cwd: ctx.projectRoot,
    env,
    detached: true,
    output: 'inherit',
  });
  ctx.resources.add({
    name: `${kind} service (pid ${child.pid})`,
    ended: child.exited.then(describeExit),
    stop: async () => {
      await child.stop('SIGTERM', graceMs + 5000);
    },
  });
  ctx.progress.ok(`started the ${kind} service (pid ${child.pid})`);
}
