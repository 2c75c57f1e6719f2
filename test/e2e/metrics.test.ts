import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { load } from 'js-yaml';
import { call, expectError } from '../support/clients';
import { aSubmission } from '../support/requests';
import { metricsPortOf, scrape, valueOf } from '../support/metrics-scrape';
import { startServices, type RunningServices } from '../support/services';

const ROOT = join(__dirname, '..', '..', '..');

/** Metric names a PromQL expression uses (ours and the process' own). */
function metricNamesIn(expression: string): string[] {
  return [...expression.matchAll(/\b((?:crucible|process|nodejs)_[a-z0-9_]+)\b/g)].map((m) => m[1] as string);
}

/** Whether `name` is a family the services export, or a histogram's series (_bucket, _sum, _count). */
function exported(families: Map<string, string>, name: string): boolean {
  if (families.has(name)) return true;
  const histogram = /^(.*)_(bucket|sum|count)$/.exec(name);
  return histogram !== null && ['histogram', 'summary'].includes(families.get(histogram[1] as string) ?? '');
}

describe('e2e: Prometheus metrics (COMMAND_METRICS_PORT, QUERY_METRICS_PORT), the dashboard and the alert rules', function () {
  this.timeout(60_000);
  let services: RunningServices;
  let commandPort: number;
  let queryPort: number;

  before(async () => {
    services = await startServices({ overrides: { COMMAND_METRICS_PORT: '0', QUERY_METRICS_PORT: '0' } });
    commandPort = metricsPortOf(services.command);
    queryPort = metricsPortOf(services.query);
  });
  after(async () => {
    await services?.close();
  });

  it('counts every call by method and code, refusals included, and the group-commit batches', async () => {
    const { command } = services.clients;
    const submitted = await call(command, command.submitEvaluation, aSubmission({ evalId: 'metrics-1' }));
    expect(submitted.revision).to.equal('1');
    const refused = await expectError(
      call(command, command.startEvaluation, { evalId: '', executorId: 'e', containerId: '', requestId: '' }),
    );
    expect(refused.code).to.equal(status.INVALID_ARGUMENT);

    const { samples } = await scrape(commandPort);
    const count = (method: string, code: string): number | undefined =>
      valueOf(samples, 'crucible_rpc_duration_seconds_count', { method, code, service: 'command' });
    expect(count('SubmitEvaluation', 'OK')).to.equal(1);
    expect(count('StartEvaluation', 'INVALID_ARGUMENT')).to.equal(1);
    expect(count('StartEvaluation', 'OK')).to.equal(undefined);
    expect(valueOf(samples, 'crucible_group_commit_batch_commands_count')).to.be.at.least(1);
    expect(valueOf(samples, 'crucible_commands_in_progress')).to.equal(0);
    expect(valueOf(samples, 'crucible_commands_shed_total', { reason: 'queue_full' })).to.equal(0);
    expect(valueOf(samples, 'crucible_postgres_pool_connections', { state: 'idle' })).to.be.at.least(1);
    expect(valueOf(samples, 'process_resident_memory_bytes')).to.be.greaterThan(0);
  });

  it("counts how the command service's recent states served commands: a start after the submit needs no load", async () => {
    const { command } = services.clients;
    const guesses = async (): Promise<Record<string, number | undefined>> => {
      const { samples } = await scrape(commandPort);
      const of = (result: string): number | undefined =>
        valueOf(samples, 'crucible_command_state_guesses_total', { result });
      return { hit: of('hit'), miss: of('miss'), reloaded: of('reloaded') };
    };
    const before = await guesses();
    await call(command, command.submitEvaluation, aSubmission({ evalId: 'metrics-guess' }));
    await call(command, command.startEvaluation, {
      evalId: 'metrics-guess',
      executorId: 'exec-metrics',
      containerId: 'c-1',
      requestId: 'metrics-guess-start',
    });
    const after = await guesses();
    expect((after.hit ?? 0) - (before.hit ?? 0), 'hits').to.equal(1);
    expect(after.miss, 'misses').to.equal(before.miss);
    expect(after.reloaded, 'reloaded').to.equal(before.reloaded);
  });

  it('shows the projection caught up, lookups by code, and each open stream until it ends', async () => {
    const { command, query } = services.clients;
    const submitted = await call(command, command.submitEvaluation, aSubmission({ evalId: 'metrics-2' }));
    await call(query, query.getEvaluation, { evalId: 'metrics-2', minPosition: submitted.position });
    const missing = await expectError(call(query, query.getEvaluation, { evalId: 'nobody' }));
    expect(missing.code).to.equal(status.NOT_FOUND);
    // A wait for a position nobody wrote, ended by its deadline (whoever of grpc-js and the handler ends it).
    const late = await expectError(
      call(query, query.getEvaluation, { evalId: 'metrics-2', minPosition: '1000000' }, 300),
    );
    expect(late.code).to.equal(status.DEADLINE_EXCEEDED);

    const watch = query.watchEvaluation({ evalId: 'metrics-2' });
    const first = new Promise<void>((resolve, reject) => {
      watch.once('data', () => resolve());
      watch.once('error', reject);
    });
    await first;
    let { samples } = await scrape(queryPort);
    expect(valueOf(samples, 'crucible_rpc_duration_seconds_count', { method: 'GetEvaluation', code: 'OK' })).to.equal(
      1,
    );
    expect(
      valueOf(samples, 'crucible_rpc_duration_seconds_count', { method: 'GetEvaluation', code: 'NOT_FOUND' }),
    ).to.equal(1);
    expect(
      valueOf(samples, 'crucible_rpc_duration_seconds_count', { method: 'GetEvaluation', code: 'DEADLINE_EXCEEDED' }),
    ).to.equal(1);
    expect(valueOf(samples, 'crucible_rpc_streams_open', { method: 'WatchEvaluation' })).to.equal(1);
    expect(valueOf(samples, 'crucible_projection_caught_up')).to.equal(1);
    expect(valueOf(samples, 'crucible_projection_lag_positions')).to.equal(0);
    expect(valueOf(samples, 'crucible_projection_checkpoint')).to.equal(Number(submitted.position));

    const ended = new Promise<void>((resolve) => watch.once('error', () => resolve()));
    watch.cancel();
    await ended;
    // The server hears of the cancel on its own time: scrape until it has (each scrape a round trip).
    const deadline = Date.now() + 10_000;
    for (;;) {
      ({ samples } = await scrape(queryPort));
      if (valueOf(samples, 'crucible_rpc_streams_open', { method: 'WatchEvaluation' }) === 0) break;
      if (Date.now() > deadline) throw new Error('the stream was never counted closed');
    }
    expect(valueOf(samples, 'crucible_rpc_streams_total', { method: 'WatchEvaluation', code: 'CANCELLED' })).to.equal(
      1,
    );
  });

  it('exports every metric the Grafana dashboard and the alert rules use', async () => {
    const families = new Map([...(await scrape(commandPort)).families, ...(await scrape(queryPort)).families]);
    const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy', 'grafana', 'crucible-storage.json'), 'utf8')) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    const rules = load(readFileSync(join(ROOT, 'deploy', 'prometheus', 'alerts.yml'), 'utf8')) as {
      groups: { rules: { alert: string; expr: string }[] }[];
    };
    const uses = [
      ...dashboard.panels.flatMap((panel) =>
        panel.targets.map((t) => ({ where: `panel "${panel.title}"`, expr: t.expr })),
      ),
      ...rules.groups.flatMap((group) =>
        group.rules.map((rule) => ({ where: `alert ${rule.alert}`, expr: rule.expr })),
      ),
    ];
    expect(uses.length).to.be.greaterThan(20);
    const unknown = uses.flatMap(({ where, expr }) =>
      metricNamesIn(expr)
        .filter((name) => !exported(families, name))
        .map((name) => `${where}: ${name}`),
    );
    expect(unknown).to.deep.equal([]);
    // Each alert also says what it is about.
    for (const rule of rules.groups.flatMap((group) => group.rules))
      expect((rule as { annotations?: { summary?: string } }).annotations?.summary, rule.alert).to.be.a('string');
  });

  it('answers 404 anywhere but GET /metrics', async () => {
    const response = await fetch(`http://127.0.0.1:${queryPort}/`);
    expect(response.status).to.equal(404);
    expect(await response.text()).to.contain('GET /metrics');
  });
});
