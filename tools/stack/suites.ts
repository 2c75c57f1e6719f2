import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { StackContext } from './context';
import { StackError } from './progress';
import { describeExit, startChild, type Child } from '../process';

/**
 * Test suites in the order they run; each is `npm run test:<name>` over dist/test/<name>.
 * `cluster` runs the integration suites that use Redis (command, query) and the e2e suite
 * again, and dist/test/cluster's topology faults, against a Redis Cluster (TEST_CLUSTER_NODES,
 * started when nothing answers there).
 */
export const SUITES = ['unit', 'integration', 'e2e', 'fault', 'cluster', 'fuzz', 'soak'] as const;

/** Where the cluster suite's Redis Cluster runs unless REDIS_CLUSTER_NODES names one. */
export const TEST_CLUSTER_NODES =
  '127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003,127.0.0.1:7004,127.0.0.1:7005,127.0.0.1:7006';
export type Suite = (typeof SUITES)[number];

export function parseSuites(names: readonly string[]): Suite[] {
  const unknown = names.filter((n) => !(SUITES as readonly string[]).includes(n));
  if (unknown.length > 0) {
    throw new StackError(`unknown test suite(s): ${unknown.join(', ')}`, `choose from ${SUITES.join(', ')}`);
  }
  return names.length === 0 ? [...SUITES] : SUITES.filter((s) => names.includes(s));
}

function hasTestFiles(dir: string): boolean {
  if (!existsSync(dir)) return false;
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).some((f) => f.endsWith('.test.js'));
}

/** npm itself: the one running us when started by `npm test`, else the one on PATH. */
function npmCommand(): [string, string[]] {
  const cli = process.env.npm_execpath;
  return cli !== undefined && cli.endsWith('.js') ? [process.execPath, [cli]] : ['npm', []];
}

/** A suite that did not pass, with mocha's list of its failures (empty if none was printed). */
export interface FailedSuite {
  readonly suite: Suite;
  readonly failures: string;
}

/** Output kept per suite: enough for mocha's failure list, which it prints last. */
const KEPT_OUTPUT = 256 * 1024;
/** Characters of one suite's failure list repeated at the end. */
const RECAP_LIMIT = 24 * 1024;

/**
 * Mocha's failure list ("N failing" and what follows) from the end of a suite's output. A long
 * run's later suites push it far above the end of the log, where CI shows only the tail: the
 * stack repeats it once every suite has run.
 */
export function failureList(output: string): string {
  const matches = [...output.matchAll(/^\s*\d+ failing\b/gm)];
  const last = matches.at(-1);
  if (last?.index === undefined) return '';
  const list = output.slice(last.index).trim();
  return list.length > RECAP_LIMIT ? `${list.slice(0, RECAP_LIMIT)}\n… (cut; the whole list is above)` : list;
}

/**
 * Runs the suites one after the other (they share the servers; each spec isolates itself),
 * with their output passed through. Returns the suites that failed, with their failure lists.
 */
export async function runSuites(
  suites: readonly Suite[],
  envOf: (suite: Suite) => NodeJS.ProcessEnv,
  ctx: StackContext,
): Promise<FailedSuite[]> {
  const failed: FailedSuite[] = [];
  const [npm, npmArgs] = npmCommand();
  for (const suite of suites) {
    ctx.signal.throwIfAborted();
    const dir = join(ctx.projectRoot, 'dist', 'test', suite);
    if (!hasTestFiles(dir)) {
      // A suite asked for that has nothing to run is a broken build, not a pass.
      ctx.progress.warn(`test:${suite}: failed: no compiled test files in dist/test/${suite} (run npm run build)`);
      failed.push({ suite, failures: '' });
      continue;
    }
    ctx.progress.step(`test:${suite}: running`);
    const child: Child = await startChild({
      command: npm,
      args: [...npmArgs, 'run', `test:${suite}`],
      cwd: ctx.projectRoot,
      env: envOf(suite),
      detached: false,
      output: 'forward',
      captureLimit: KEPT_OUTPUT,
    });
    // A terminal's Ctrl-C reaches the suite directly (same process group); SIGTERM sent to us
    // only is passed on, so the suite can end and we can stop what we started.
    const onAbort = (): void => void child.stop('SIGTERM', 10_000);
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    const status = await child.exited;
    ctx.signal.removeEventListener('abort', onAbort);
    if (status.code === 0) {
      ctx.progress.ok(`test:${suite}: passed`);
    } else {
      ctx.progress.warn(`test:${suite}: failed (${describeExit(status)})`);
      failed.push({ suite, failures: failureList(child.output()) });
    }
  }
  return failed;
}
