import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { Logger } from '../logging';

/**
 * A service's Prometheus registry: its own (never prom-client's global one, so that two services
 * or two tests in one process do not mix), every series labelled with the service, and the
 * process' own figures (CPU, memory, event-loop lag, GC) beside what the service registers.
 */
export function createMetricsRegistry(service: 'command' | 'query'): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  return registry;
}

/** One series of a metric read at scrape time: its labels and its value. */
export interface Sample {
  readonly labels?: Readonly<Record<string, string>>;
  readonly value: number;
}

type Reading = number | readonly Sample[];

const samplesOf = (reading: Reading): readonly Sample[] =>
  typeof reading === 'number' ? [{ value: reading }] : reading;

/**
 * A gauge whose value is read from its source when Prometheus scrapes, not pushed on every
 * change: the hot paths keep plain numbers and pay nothing for being watched. A source that
 * fails (a count from PostgreSQL while it is down) makes that scrape's value NaN (no series,
 * for a labelled gauge), never a made-up 0, and leaves the rest of the scrape whole.
 */
export function gaugeOf(
  registry: Registry,
  definition: { readonly name: string; readonly help: string; readonly labelNames?: readonly string[] },
  read: () => Reading | Promise<Reading>,
): void {
  new Gauge({
    name: definition.name,
    help: definition.help,
    labelNames: definition.labelNames ?? [],
    registers: [registry],
    async collect() {
      this.reset();
      let reading: Reading;
      try {
        reading = await read();
      } catch {
        if ((definition.labelNames ?? []).length === 0) this.set(Number.NaN);
        return;
      }
      for (const { labels, value } of samplesOf(reading)) {
        if (labels === undefined) this.set(value);
        else this.set(labels, value);
      }
    },
  });
}

/**
 * A counter whose total a component keeps (a plain number that only grows), read when
 * Prometheus scrapes.
 */
export function counterOf(
  registry: Registry,
  definition: { readonly name: string; readonly help: string; readonly labelNames?: readonly string[] },
  read: () => Reading,
): void {
  new Counter({
    name: definition.name,
    help: definition.help,
    labelNames: definition.labelNames ?? [],
    registers: [registry],
    collect() {
      this.reset();
      for (const { labels, value } of samplesOf(read())) {
        if (labels === undefined) this.inc(value);
        else this.inc(labels, value);
      }
    },
  });
}

export interface MetricsEndpoint {
  /** The port it listens on (the one asked for, or the free one picked for 0). */
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Serves the registry at `GET /metrics` on its own HTTP port (not the gRPC one: Prometheus
 * scrapes plain HTTP/1.1, and a scrape never competes with calls for the gRPC server).
 */
export async function serveMetrics(options: {
  readonly registry: Registry;
  readonly host: string;
  readonly port: number;
  readonly logger: Logger;
}): Promise<MetricsEndpoint> {
  const { registry, logger } = options;
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' || path !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => {
        logger.warn('collecting metrics failed', { err });
        response.writeHead(500, { 'content-type': 'text/plain' }).end('collecting metrics failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
