import { expect } from 'chai';
import type { RunningService } from './processes';

/**
 * Scraping a service's Prometheus endpoint. Each process serves its own (COMMAND_METRICS_PORT /
 * QUERY_METRICS_PORT 0: a free port, named in its "listening" line), which is also what tells
 * several instances of a service apart.
 */

/** The metrics port a service logged in its "listening" line. */
export function metricsPortOf(service: RunningService): number {
  for (const line of service.logs().split('\n')) {
    if (!line.includes('"listening"')) continue;
    const port = (JSON.parse(line) as { metricsPort?: number }).metricsPort;
    if (port !== undefined) return port;
  }
  throw new Error(`no metricsPort in the listening line:\n${service.logs()}`);
}

export interface Scrape {
  /** Every sample by its series (name and labels, as Prometheus writes it). */
  readonly samples: Map<string, number>;
  /** Each family's type, by name. */
  readonly families: Map<string, string>;
}

/** One scrape of the endpoint on `port`, which must answer 200 in the text format. */
export async function scrape(port: number): Promise<Scrape> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(response.status).to.equal(200);
  expect(response.headers.get('content-type')).to.contain('text/plain');
  const samples = new Map<string, number>();
  const families = new Map<string, string>();
  for (const line of (await response.text()).split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type !== null) families.set(type[1] as string, type[2] as string);
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return { samples, families };
}

/** The series of `name` whose labels include every one of `labels`, with their values. */
function seriesOf(samples: Map<string, number>, name: string, labels: Record<string, string>): [string, number][] {
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`);
  return [...samples].filter(
    ([series]) => (series === name || series.startsWith(`${name}{`)) && wanted.every((label) => series.includes(label)),
  );
}

/** The value of the one series of `name` whose labels include every one of `labels`. */
export function valueOf(
  samples: Map<string, number>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  return seriesOf(samples, name, labels)[0]?.[1];
}

/** The sum over every series of `name` whose labels include every one of `labels` (0 if none). */
export function totalOf(samples: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  return seriesOf(samples, name, labels).reduce((sum, [, value]) => sum + value, 0);
}
