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

/** The `ENV` of a Dockerfile's last stage (what a service built from it starts with). */
export function dockerfileEnv(text: string): Record<string, string> {
  const stages = text.split(/^FROM\s/m);
  const env: Record<string, string> = {};
  for (const line of (stages[stages.length - 1] ?? '').split('\n')) {
    const match = /^ENV\s+(.*)$/.exec(line.trim());
    if (match === null) continue;
    for (const pair of (match[1] ?? '').split(/\s+/)) {
      const at = pair.indexOf('=');
      if (at > 0) env[pair.slice(0, at)] = pair.slice(at + 1);
    }
  }
  return env;
}

/**
 * What is wrong with the compose file `text` (empty: nothing); `imageEnv`: the environment the
 * image built by `build: .` starts with (its Dockerfile's `ENV`), under the compose file's.
 */
export function composeProblems(text: string, imageEnv: Readonly<Record<string, string>> = {}): string[] {
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
      const mapping = portMapping(port);
      if (mapping === undefined) {
        problems.push(`${at}.ports ${JSON.stringify(port)} is not [IP:][HOST:]CONTAINER[/PROTOCOL]`);
        continue;
      }
      published.add(mapping.container);
      const host = `${mapping.ip}:${mapping.host}`;
      const taken = hostPorts.get(host);
      if (taken !== undefined) problems.push(`${at} publishes host port ${mapping.host}, as ${taken} does`);
      hostPorts.set(host, name);
    }
    for (const volume of Array.isArray(raw.volumes) ? (raw.volumes as unknown[]) : []) {
      const source = String(volume).split(':')[0] ?? '';
      if (!/^[./~]/.test(source) && !volumes.includes(source))
        problems.push(`${at}.volumes uses ${source}, which the top-level volumes do not declare`);
    }
    problems.push(...serviceEnvironmentProblems(at, raw, published, raw.build === undefined ? {} : imageEnv));
  }
  return problems;
}

/** A `ports` entry, short (`[IP:][HOST:]CONTAINER[/PROTOCOL]`) or long (`target`, `published`). */
function portMapping(port: unknown): { ip: string; host: number; container: number } | undefined {
  let ip: string;
  let host: number;
  let container: number;
  if (isMap(port)) {
    container = Number(port.target);
    host = port.published === undefined ? container : Number(port.published);
    ip = typeof port.host_ip === 'string' ? port.host_ip : '';
  } else {
    const match = /^(?:([\d.]+|\[[\da-f:]+\]):)?(?:(\d+):)?(\d+)(?:\/(?:tcp|udp))?$/.exec(String(port));
    if (match === null) return undefined;
    ip = match[1] ?? '';
    container = Number(match[3]);
    host = match[2] === undefined ? container : Number(match[2]);
  }
  const valid = (p: number): boolean => Number.isInteger(p) && p >= 1 && p <= 65535;
  return valid(host) && valid(container) ? { ip, host, container } : undefined;
}

/** A service's `environment`, map or list (`KEY=VALUE`); a key without a value comes from the shell: unknown here. */
function environmentOf(service: Json): Record<string, string> {
  const raw = service.environment;
  const entries: [string, unknown][] = Array.isArray(raw)
    ? raw.map((item) => {
        const text = String(item);
        const at = text.indexOf('=');
        return at < 0 ? [text, null] : [text.slice(0, at), text.slice(at + 1)];
      })
    : isMap(raw)
      ? Object.entries(raw)
      : [];
  return Object.fromEntries(
    entries.filter(([, value]) => value !== null && value !== undefined).map(([key, value]) => [key, String(value)]),
  );
}

/** Our services' environment (the image's, then compose's): settings only, valid together, their ports published. */
function serviceEnvironmentProblems(
  at: string,
  service: Json,
  published: ReadonlySet<number>,
  imageEnv: Readonly<Record<string, string>>,
): string[] {
  const command = Array.isArray(service.command) ? service.command.map(String).join(' ') : String(service.command);
  const ours = /dist\/services\/(command|query)\/main\.js|dist\/tools\/stack\/main\.js/.exec(command);
  if (ours === null) return [];
  const env = environmentOf(service);
  const problems = Object.keys(env)
    .filter((key) => !(key in SETTINGS))
    .map((key) => `${at}.environment sets ${key}, which is no setting (a typo?)`);
  let config;
  try {
    config = loadConfig({ ...imageEnv, ...env });
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
  const root = join(__dirname, '..', '..');
  const problems = composeProblems(
    readFileSync(join(root, 'docker-compose.yml'), 'utf8'),
    dockerfileEnv(readFileSync(join(root, 'Dockerfile'), 'utf8')),
  );
  if (problems.length === 0) {
    process.stdout.write('check-compose: docker-compose.yml holds together\n');
    return;
  }
  process.stderr.write(`check-compose: docker-compose.yml is broken:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
  process.exitCode = 1;
}

if (require.main === module) main();
