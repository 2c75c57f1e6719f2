import { join, resolve } from 'node:path';
import { ConfigError, loadConfig, settingsHelp } from '../../shared/config';
import type { StackContext } from './context';
import { dependencyEnv, ensureDependencies, prepareDatabase, serviceEnv } from './deps';
import { serviceRedisUsers } from '../../shared/redis';
import { serviceRedisUrls } from './redis';
import { createResourceStack } from './processes';
import { createProgress, StackError } from './progress';
import { assertBuilt, startService } from './services';
import { parseSuites, runSuites, SUITES, TEST_CLUSTER_NODES } from './suites';
import { ensureRedisCluster } from './redis-cluster';

/**
 * The local stack: `deps`, `migrate`, `up` and `test` (see USAGE). Composition root: the only
 * place that reads process.env, handles signals and decides the exit code.
 */

const USAGE = `usage: node dist/tools/stack/main.js <command>   (npm run up | migrate | test, make ...)

commands:
  deps               make PostgreSQL, Redis and S3 answer at the configured addresses: use what
                     answers, start local servers (data in .data/) for what does not; create the
                     database and bucket, apply migrations. Keeps what it started running until
                     Ctrl-C; exits at once if everything was already running.
  migrate            create the database if missing and apply migrations (PostgreSQL must answer)
  up                 deps, then run the command and query services (JSON logs on stdout) until
                     Ctrl-C / SIGTERM, which stops the services, then whatever deps started.
                     A service or server it started that exits on its own is started again
                     (after 0.5 s, doubling to 30 s while it keeps failing; reset after a
                     minute of running), the others untouched
  test [suite...]    deps with ENVIRONMENT=test, then run the suites in order (default: all of
                     ${SUITES.join(', ')}); a suite without compiled test files fails.
                     The cluster suite runs the command and query integration tests, the e2e
                     suite and test/cluster against the Redis Cluster REDIS_CLUSTER_NODES
                     names, or a local one on ${TEST_CLUSTER_NODES.split(',')[0] ?? ''}… (six
                     nodes) started for it

With REDIS_CLUSTER_NODES set, deps and up use that Redis Cluster instead of REDIS_URL's Redis,
starting a local one (three primaries, three replicas) when the six local addresses it names
do not answer.

Progress goes to stderr. Servers are started only for local addresses (127.0.0.1, localhost),
with their data under STACK_DATA_DIR (default: .data/ in the checkout).

configuration (environment variables; ENVIRONMENT defaults to development):
`;

function help(): string {
  return `${USAGE}${settingsHelp()}\n`;
}

/** Ctrl-C / SIGTERM / SIGHUP: the reason the tool's AbortSignal carries. */
class Interrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
    this.name = 'Interrupted';
  }
}

const SIGNAL_EXIT_CODES = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 } as const;

/** Waits for Ctrl-C / SIGTERM; meanwhile what crashes is restarted by its supervisor. */
async function holdUntilStopped(ctx: StackContext): Promise<number> {
  await new Promise<void>((resolve) => {
    if (ctx.signal.aborted) resolve();
    ctx.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  return 0;
}

async function run(command: string, args: readonly string[], ctx: StackContext): Promise<number> {
  switch (command) {
    case 'deps': {
      await ensureDependencies(loadConfig(process.env), ctx);
      if (ctx.resources.names.length === 0) {
        ctx.progress.ok('everything was already running; nothing to keep up');
        return 0;
      }
      ctx.progress.ok(`ready; keeping ${ctx.resources.names.join(', ')} up until Ctrl-C`);
      return holdUntilStopped(ctx);
    }
    case 'migrate': {
      await prepareDatabase(loadConfig(process.env), ctx);
      return 0;
    }
    case 'up': {
      const config = loadConfig(process.env);
      assertBuilt(ctx.projectRoot, ['command', 'query']);
      // Each service as its Redis ACL user, unless REDIS_URL names one (docs/security.md).
      const redisUsers =
        new URL(config.redisUrl).username === '' ? serviceRedisUsers(config.redisKeyPrefix) : undefined;
      await ensureDependencies(config, ctx, redisUsers === undefined ? [] : [redisUsers.command, redisUsers.query]);
      const env = serviceEnv(config);
      const redis = await serviceRedisUrls(config.redisUrl, config.redisClusterNodes, redisUsers, ctx.progress);
      await startService('command', { ...env, REDIS_URL: redis.command }, config.shutdownGraceMs, ctx);
      await startService('query', { ...env, REDIS_URL: redis.query }, config.shutdownGraceMs, ctx);
      ctx.progress.ok(
        `up: command on ${config.host}:${config.commandPort}, query on ${config.host}:${config.queryPort}; Ctrl-C stops everything`,
      );
      const metricsAt = (port: number | undefined): string =>
        port === undefined ? 'off' : `http://${config.host}:${port}/metrics`;
      ctx.progress.ok(
        `metrics: command ${metricsAt(config.commandMetricsPort)}, query ${metricsAt(config.queryMetricsPort)} ` +
          '(Grafana dashboard and alert rules in deploy/)',
      );
      return holdUntilStopped(ctx);
    }
    case 'test': {
      const suites = parseSuites(args);
      const config = loadConfig({ ...process.env, ENVIRONMENT: 'test' });
      await ensureDependencies(config, ctx);
      const env = dependencyEnv(config);
      // The cluster suite's cluster: the one REDIS_CLUSTER_NODES names, or a local one.
      const clusterConfig =
        config.redisClusterNodes.length > 0
          ? config
          : loadConfig({ ...process.env, ENVIRONMENT: 'test', REDIS_CLUSTER_NODES: TEST_CLUSTER_NODES });
      if (suites.includes('cluster') && clusterConfig !== config)
        await ensureRedisCluster(clusterConfig.redisUrl, clusterConfig.redisClusterNodes, ctx);
      const clusterEnv = dependencyEnv(clusterConfig);
      const failed = await runSuites(suites, (suite) => (suite === 'cluster' ? clusterEnv : env), ctx);
      if (failed.length > 0) {
        for (const { suite, failures } of failed) {
          if (failures !== '') process.stdout.write(`\n[stack] test:${suite} failed:\n${failures}\n\n`);
        }
        ctx.progress.warn(`failed: ${failed.map(({ suite }) => `test:${suite}`).join(', ')}`);
        return 1;
      }
      ctx.progress.ok('all test suites passed');
      return 0;
    }
    default:
      process.stderr.write(`unknown command "${command}"\n\n${help()}`);
      return 2;
  }
}

function report(err: unknown, ctx: StackContext): number {
  if (err instanceof Interrupted) {
    ctx.progress.warn(err.message);
    return SIGNAL_EXIT_CODES[err.signal as keyof typeof SIGNAL_EXIT_CODES] ?? 1;
  }
  if (err instanceof StackError) {
    process.stderr.write(`[stack] FAILED: ${err.message}\n[stack]   what to do: ${err.advice}\n`);
    return 1;
  }
  if (err instanceof ConfigError) {
    process.stderr.write(
      `[stack] FAILED: ${err.message}\n[stack]   what to do: fix these variables (--help lists them)\n`,
    );
    return 2;
  }
  process.stderr.write(
    `[stack] FAILED unexpectedly: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  return 1;
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...args] = argv;
  if (command === undefined || ['--help', '-h', 'help'].includes(command)) {
    process.stdout.write(help());
    return command === undefined ? 2 : 0;
  }
  const progress = createProgress();
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) {
      progress.warn(`${signal} again: still stopping what was started, please wait`);
      return;
    }
    progress.step(`${signal}: stopping`);
    controller.abort(new Interrupted(signal));
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const signal of signals) process.on(signal, onSignal);

  const projectRoot = resolve(__dirname, '..', '..', '..');
  const ctx: StackContext = {
    progress,
    resources: createResourceStack(),
    projectRoot,
    dataDir: resolve(process.env.STACK_DATA_DIR ?? join(projectRoot, '.data')),
    signal: controller.signal,
  };
  let code: number;
  try {
    code = await run(command, args, ctx);
  } catch (err) {
    code = report(err, ctx);
  }
  await ctx.resources.stopAll(progress);
  for (const signal of signals) process.off(signal, onSignal);
  return code;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`[stack] ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
