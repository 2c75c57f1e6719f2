import { readFileSync } from 'node:fs';
import { formatMachine } from './support/machine';
import { cell, table, type Report } from './support/report';
import { median } from './support/stats';

const USAGE = `usage: node dist/bench/summarize.js <run>.json <run>.json ...   (npm run bench:summary -- ...)

The targets are judged on medians of several runs, never on one: prints, for every row of the
given full runs, each run's ratio to its floor and their median, and for every target how many
runs met it.
`;

function main(files: readonly string[]): number {
  if (files.length === 0 || files.includes('--help')) {
    process.stdout.write(USAGE);
    return files.length === 0 ? 2 : 0;
  }
  const reports = files.map((file) => JSON.parse(readFileSync(file, 'utf8')) as Report);
  const ratios = new Map<string, (number | undefined)[]>();
  const checks = new Map<string, { actual: string; met: boolean }[]>();
  reports.forEach((report, run) => {
    for (const { result } of report.scenarios) {
      for (const row of result?.rows ?? []) {
        const key = `${row.scenario} | ${row.case}`;
        const list = ratios.get(key) ?? new Array<number | undefined>(reports.length).fill(undefined);
        list[run] = row.ratio;
        ratios.set(key, list);
      }
      for (const check of result?.checks ?? []) {
        const list = checks.get(check.target) ?? [];
        list.push(check);
        checks.set(check.target, list);
      }
    }
  });
  const lines = [
    `${reports.length} runs: ${reports.map((r) => `${r.startedAt} (${r.mode}, load ${r.machine.loadAverage.toFixed(2)})`).join(', ')}`,
    `on ${reports[0] === undefined ? '?' : formatMachine(reports[0].machine)}.`,
    '',
    ...table(
      ['scenario', 'case', 'ratio in each run', 'median'],
      [...ratios].map(([key, list]) => {
        const [scenario = '', kase = ''] = key.split(' | ');
        const known = list.filter((r): r is number => r !== undefined && Number.isFinite(r));
        return [
          cell(scenario),
          cell(kase),
          list.map((r) => (r === undefined || !Number.isFinite(r) ? '—' : `${r.toFixed(2)}×`)).join(', '),
          known.length === 0 ? '—' : `**${median(known).toFixed(2)}×**`,
        ];
      }),
    ),
    '',
    ...table(
      ['target', 'each run', 'met'],
      [...checks].map(([target, list]) => [
        cell(target),
        cell(list.map((c) => c.actual).join(', ')),
        `${list.filter((c) => c.met).length} of ${list.length}`,
      ]),
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
