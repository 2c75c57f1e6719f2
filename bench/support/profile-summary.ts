import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

/**
 * Entry point: `node dist/bench/support/profile-summary.js <file.cpuprofile> [top]` prints
 * where a process spent its CPU (self time per function, and per package or project folder),
 * the quick look before opening the profile as a flame graph (Chrome DevTools, speedscope).
 * Profiles come from `npm run bench -- --profile` (bench/results/profiles/).
 */
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** node_modules/<package> or the project's top folder (services/query, shared, ...). */
function area(url: string): string {
  if (url === '') return '(runtime)';
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (modules?.[1] !== undefined) return modules[1];
  if (url.startsWith('node:')) return 'node core';
  const project = /\/(services\/[^/]+|shared|bench|test)\//.exec(url);
  return project?.[1] ?? basename(url);
}

function summarize(file: string, top: number): string {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const byFunction = new Map<string, number>();
  const byArea = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const frame = nodes.get(id)?.callFrame;
    const dt = profile.timeDeltas[i] ?? 0;
    if (frame === undefined) return;
    total += dt;
    const name = `${frame.functionName || '(anonymous)'} ${frame.url === '' ? '' : `${frame.url.replace(/^.*\/(node_modules|services|shared)\//, '$1/')}:${frame.lineNumber + 1}`}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + dt);
    byArea.set(area(frame.url), (byArea.get(area(frame.url)) ?? 0) + dt);
  });
  const lines = (map: Map<string, number>): string[] =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => `  ${((us / total) * 100).toFixed(1).padStart(5)}%  ${name}`);
  return [
    `${file}: ${(total / 1e6).toFixed(1)} s sampled`,
    'by area:',
    ...lines(byArea),
    'by function (self time):',
    ...lines(byFunction),
  ].join('\n');
}

const [file, top] = process.argv.slice(2);
if (file === undefined) {
  process.stderr.write('usage: node dist/bench/support/profile-summary.js <file.cpuprofile> [top]\n');
  process.exit(2);
}
process.stdout.write(`${summarize(file, Number(top ?? 20))}\n`);
