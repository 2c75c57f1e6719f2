import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { load } from 'js-yaml';
import { loadConfig, SETTINGS } from '../shared/config';

/**
 * `make lint`'s check of docker-compose.yml, in place of `docker compose config` (CI has no
 * Docker): the file parses (anchors and merges included), every service has an image or a
 * build, its dependencies, healthchecks, ports and named volumes fit together, and the services
 * that run our code get an environment the services accept (every key a setting, every value
 * valid, the ports they listen on published), so the compose file cannot silently break.
 */

type Json = Record<string, unknown>;

const CONDITIONS = ['service_started', 'service_healthy', 'service_completed_successfully'];

const isMap = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

/** What is wrong with the compose file `text` (empty: nothing). */
export function composeProblems(text: string): string[] {
  let doc: unknown;
  try {
    doc = load(text);
  } catch (err) {
    return [`does not parse: ${(err as Error).message}`];
  }
  if (!isMap(doc) || !isMap(doc.services)) return ['has no `services` map'];
  const services = doc.services;
  const volumes = isMap(doc.volumes) ? Object.keys(doc.volumes) : [];
  const problems: string[] = [];
  const hostPorts = new Map<string, string>();
  for (const [name, raw] of Object.entries(services)) {
    const at = `services.${name}`;
    if (!isMap(raw)) {
      problems.push(`${at} is not a map`);
      continue;
    }
    if (raw.image === undefined && raw.build === undefined) problems.push(`${at} has neither image nor build`);
    const dependencies = Array.isArray(raw.depends_on)
      ? Object.fromEntries((raw.depends_on as unknown[]).map((d) => [String(d), {}]))
      : isMap(raw.depends_on)
        ? raw.depends_on
        : {};
    for (const [dependency, spec] of Object.entries(dependencies)) {
      const target = services[dependency];
      if (!isMap(target)) {
        problems.push(`${at}.depends_on names ${dependency}, which is no service`);
        continue;
      }
      const condition = isMap(spec) ? spec.condition : undefined;
      if (condition !== undefined && !(typeof condition === 'string' && CONDITIONS.includes(condition)))
        problems.push(
          `${at}.depends_on.${dependency}.condition ${JSON.stringify(condition)} is none of ${CONDITIONS.join(', ')}`,
        );
      if (condition === 'service_healthy' && target.healthcheck === undefined)
        problems.push(`${at} waits for ${dependency} to be healthy, which has no healthcheck`);
    }
    const published = new Set<number>();
    for (const port of Array.isArray(raw.ports) ? (raw.ports as unknown[]) : []) {
      const match = /^(?:(\d+):)?(\d+)$/.exec(String(port));
      const numbers = match === null ? [] : [match[1], match[2]].filter((p) => p !== undefined).map(Number);
      if (match === null || numbers.some((p) => p < 1 || p > 65535)) {
        problems.push(`${at}.ports ${String(port)} is not HOST:CONTAINER`);
        continue;
      }
      published.add(Number(match[2]));
      const host = match[1] ?? match[2] ?? '';
      const taken = hostPorts.get(host);
      if (taken !== undefined) problems.push(`${at} publishes host port ${host}, as ${taken} does`);
      hostPorts.set(host, name);
    }
    for (const volume of Array.isArray(raw.volumes) ? (raw.volumes as unknown[]) : []) {
      const source = String(volume).split(':')[0] ?? '';
      if (!/^[./~]/.test(source) && !volumes.includes(source))
        problems.push(`${at}.volumes uses ${source}, which the top-level volumes do not declare`);
    }
    problems.push(...serviceEnvironmentProblems(at, raw, published));
  }
  return problems;
}

/** Our services' environment: settings only, valid together, their ports published. */
function serviceEnvironmentProblems(at: string, service: Json, published: ReadonlySet<number>): string[] {
  const command = Array.isArray(service.command) ? service.command.map(String).join(' ') : String(service.command);
  const ours = /dist\/services\/(command|query)\/main\.js|dist\/tools\/stack\/main\.js/.exec(command);
  if (ours === null) return [];
  const env = isMap(service.environment) ? service.environment : {};
  const problems = Object.keys(env)
    .filter((key) => !(key in SETTINGS))
    .map((key) => `${at}.environment sets ${key}, which is no setting (a typo?)`);
  let config;
  try {
    config = loadConfig(Object.fromEntries(Object.entries(env).map(([key, value]) => [key, String(value)])));
  } catch (err) {
    return [...problems, `${at}.environment is refused by the service: ${(err as Error).message.replace(/\s+/g, ' ')}`];
  }
  const listens =
    ours[1] === 'command'
      ? [config.commandPort, config.commandMetricsPort]
      : ours[1] === 'query'
        ? [config.queryPort, config.queryMetricsPort]
        : [];
  for (const port of listens)
    if (port !== undefined && !published.has(port))
      problems.push(`${at} listens on ${port} (its environment says), which its ports do not publish`);
  return problems;
}

function main(): void {
  const file = join(__dirname, '..', '..', 'docker-compose.yml');
  const problems = composeProblems(readFileSync(file, 'utf8'));
  if (problems.length === 0) {
    process.stdout.write('check-compose: docker-compose.yml holds together\n');
    return;
  }
  process.stderr.write(`check-compose: docker-compose.yml is broken:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
  process.exitCode = 1;
}

if (require.main === module) main();
