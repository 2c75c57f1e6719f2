import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { describeMachine, formatMachine } from './support/machine';
import { createChildGroup, type ChildGroup } from '../tools/process';
import { startListening } from './support/processes';
import { progress } from './support/progress';
import { renderMarkdown, writeReport, type Report } from './support/report';
import type { BenchContext } from './support/scenario';
import { PROJECT_ROOT } from './support/stack';
import { SCENARIOS } from './scenarios';

const USAGE = `usage: node dist/bench/main.js [--smoke] [--only <scenario>[,<scenario>...]] [--profile]
                                  (npm run bench | bench:smoke; make bench | bench-smoke)

Measures every hot path of the running services beside its floor, the fastest this machine
does the same work, in the same run. Uses PostgreSQL (DATABASE_URL) and Redis (REDIS_URL) as
configured (local defaults), its own s3rver, and starts the services from dist/ as processes.
Progress goes to stderr; the table to stdout and bench/results/<date>.{json,md}.

  --smoke      every scenario tiny (seconds): checks that the benchmark still runs (CI)
  --only       run only these scenarios
  --profile    run the services with --cpu-prof (profiles in bench/results/profiles/)

scenarios:
${SCENARIOS.map((s) => `  ${s.name.padEnd(16)} ${s.description}`).join('\n')}
`;

interface Options {
  readonly smoke: boolean;
  readonly only: readonly string[];
  readonly profile: boolean;
}

function parseArgs(argv: readonly string[]): Options | undefined {
  const only: string[] = [];
  let smoke = false;
  let profile = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--smoke') smoke = true;
    else if (arg === '--profile') profile = true;
    else if (arg === '--only' && argv[i + 1] !== undefined) only.push(...argv[++i]!.split(','));
    else if (arg.startsWith('--only=')) only.push(...arg.slice('--only='.length).split(','));
    else return undefined;
  }
  const unknown = only.filter((name) => !SCENARIOS.some((s) => s.name === name));
  if (unknown.length > 0) {
    process.stderr.write(`unknown scenario(s): ${unknown.join(', ')}\n`);
    return undefined;
  }
  return { smoke, only, profile };
}

async function main(argv: readonly string[], processes: ChildGroup): Promise<number> {
  const options = parseArgs(argv);
  if (options === undefined || argv.includes('--help')) {
    process.stdout.write(USAGE);
    return options === undefined ? 2 : 0;
  }
  const startedAt = new Date().toISOString();
  const started = performance.now();
  const machine = describeMachine();
  const scenarios = SCENARIOS.filter((s) => options.only.length === 0 || options.only.includes(s.name));
  progress(`${options.smoke ? 'smoke run' : 'full run'} of ${scenarios.map((s) => s.name).join(', ')}`);
  progress(`machine: ${formatMachine(machine)}`);

  const resultsDir = join(PROJECT_ROOT, 'bench', 'results');
  const s3 = await startListening({
    name: 's3rver',
    script: join(__dirname, 'support', 's3-server.js'),
    env: {},
    owner: processes,
  });
  progress(`s3rver (bench's own) on ${s3.address}`);
  const ctx: BenchContext = {
    smoke: options.smoke,
    s3Endpoint: `http://${s3.address}`,
    s3Pid: s3.pid,
    processes,
    serviceNodeArgs: options.profile
      ? ['--cpu-prof', `--cpu-prof-dir=${join(resultsDir, 'profiles', startedAt.replace(/[:.]/g, '-'))}`]
      : [],
    load: options.smoke
      ? { warmupMs: 100, durationMs: 300, rounds: 1 }
      : { warmupMs: 1000, durationMs: 3000, rounds: 3 },
    progress,
  };
  const results: Report['scenarios'][number][] = [];
  try {
    for (const scenario of scenarios) {
      const scenarioStart = performance.now();
      progress(`${scenario.name}: ${scenario.description}`);
      try {
        results.push({ name: scenario.name, result: await scenario.run(ctx) });
        progress(`${scenario.name}: done in ${Math.round((performance.now() - scenarioStart) / 1000)} s`);
      } catch (err) {
        const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
        progress(`${scenario.name}: FAILED: ${message}`);
        results.push({ name: scenario.name, error: message });
      }
    }
  } finally {
    await s3.stop();
  }

  const report: Report = {
    startedAt,
    mode: options.smoke ? 'smoke' : 'full',
    machine,
    seconds: (performance.now() - started) / 1000,
    scenarios: results,
  };
  const files = writeReport(report, resultsDir);
  process.stdout.write(renderMarkdown(report));
  progress(`wrote ${files.json} and ${files.markdown}`);
  const failed = results.filter((r) => r.error !== undefined).map((r) => r.name);
  if (failed.length > 0) progress(`failed: ${failed.join(', ')}`);
  return failed.length > 0 ? 1 : 0;
}

/** Every process the run starts: an interrupted or failed run stops them before it exits. */
const processes = createChildGroup();
const stopAndExit = async (code: number): Promise<never> => {
  await processes.stopAll('SIGTERM', 5_000);
  process.exit(code);
};

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    progress(`${signal}: stopping what the bench started`);
    void stopAndExit(signal === 'SIGINT' ? 130 : 143);
  });
}

main(process.argv.slice(2), processes).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    void stopAndExit(1);
  },
);
