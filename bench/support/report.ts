import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LoadResult } from './load';
import { formatMachine, type Machine } from './machine';

/** One figure: `{ label: 'p99', value: 1.2, unit: 'ms' }`. */
export interface Figure {
  readonly label: string;
  readonly value: number;
  readonly unit: string;
}

/** What one system achieved in one case: the service, or a floor. */
export interface Measured {
  readonly name: string;
  readonly figures: readonly Figure[];
}

/** A line of the table: the service's figures beside its floors', measured in the same run. */
export interface Row {
  readonly scenario: string;
  readonly case: string;
  readonly subject: Measured;
  readonly floors: readonly Measured[];
  /** The service's headline figure over the first floor's (higher is better unless said). */
  readonly ratio?: number;
}

/** A target of the issue, checked against this run. */
export interface Check {
  readonly target: string;
  readonly actual: string;
  readonly met: boolean;
}

export interface ScenarioResult {
  readonly rows: readonly Row[];
  readonly checks: readonly Check[];
  /** Anything a reader needs to interpret the rows (what could not be measured, and why). */
  readonly notes?: readonly string[];
}

export interface Report {
  readonly startedAt: string;
  readonly mode: 'full' | 'smoke';
  readonly machine: Machine;
  readonly seconds: number;
  readonly scenarios: readonly { name: string; result?: ScenarioResult; error?: string }[];
}

export function figure(label: string, value: number, unit: string): Figure {
  return { label, value, unit };
}

/** Throughput and latency of a load run, e.g. `12,000 req/s, p50 0.41 ms, p99 1.2 ms`. */
export function loadFigures(name: string, result: LoadResult, unit: string): Measured {
  return {
    name,
    figures: [
      figure('', result.rate, unit),
      figure('p50', result.latency.p50Ms, 'ms'),
      figure('p99', result.latency.p99Ms, 'ms'),
    ],
  };
}

function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  const abs = Math.abs(value);
  if (abs < 0.001) return '0';
  if (abs >= 100) return Math.round(value).toLocaleString('en-US');
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toPrecision(2);
}

function formatMeasured(m: Measured): string {
  const figures = m.figures.map(
    (f) => `${f.label === '' ? '' : `${f.label} `}${formatNumber(f.value)}${f.unit === '' ? '' : ` ${f.unit}`}`,
  );
  return `**${m.name}**: ${figures.join(', ')}`;
}

export const cell = (text: string): string => text.replace(/\|/g, '\\|');

/** A markdown table with its columns padded to one width (as Prettier writes it, so readable as text). */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    `| ${widths.map((w, i) => (cells[i] ?? '').padEnd(w)).join(' | ')} |`;
  return [line(header), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)];
}

/** The results as markdown: the machine, one table of every row, and the targets. */
export function renderMarkdown(report: Report): string {
  const rows: string[][] = [];
  for (const { name, result, error } of report.scenarios) {
    if (error !== undefined) rows.push([name, '—', `**failed**: ${cell(error.split('\n')[0] ?? '')}`, '', '']);
    for (const row of result?.rows ?? []) {
      const ratio = row.ratio === undefined || !Number.isFinite(row.ratio) ? '' : `${row.ratio.toFixed(2)}×`;
      rows.push([
        row.scenario,
        row.case,
        cell(formatMeasured(row.subject)),
        cell(row.floors.map(formatMeasured).join('<br>')),
        ratio,
      ]);
    }
  }
  const lines = [
    `Run ${report.startedAt} (${report.mode}, ${Math.round(report.seconds)} s) on ${formatMachine(report.machine)}.`,
    '',
    ...table(['scenario', 'case', 'service', 'floor, measured in the same run', 'ratio'], rows),
  ];
  const checks = report.scenarios.flatMap((s) => s.result?.checks ?? []);
  if (checks.length > 0) {
    lines.push(
      '',
      ...table(
        ['target', 'this run', 'met'],
        checks.map((c) => [cell(c.target), cell(c.actual), c.met ? 'yes' : '**no**']),
      ),
    );
  }
  const notes = report.scenarios.flatMap((s) => s.result?.notes ?? []);
  if (notes.length > 0) lines.push('', ...notes.map((n) => `- ${n}`));
  return `${lines.join('\n')}\n`;
}

/** Writes `<dir>/<date>.json` and `<dir>/<date>.md`; returns their paths. */
export function writeReport(report: Report, dir: string): { json: string; markdown: string } {
  mkdirSync(dir, { recursive: true });
  const stamp = report.startedAt.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const base = join(dir, report.mode === 'smoke' ? `${stamp}-smoke` : stamp);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${base}.md`, renderMarkdown(report));
  return { json: `${base}.json`, markdown: `${base}.md` };
}
