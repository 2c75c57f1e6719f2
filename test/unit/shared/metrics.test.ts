import { expect } from 'chai';
import { createMetricsRegistry, counterOf, gaugeOf } from '../../../shared/metrics';

describe('metrics read at scrape time (shared/metrics)', () => {
  it('reads each gauge and counter from its source when scraped, labelled with the service', async () => {
    const registry = createMetricsRegistry('query');
    let queued = 3;
    let refused = 0;
    gaugeOf(registry, { name: 'test_queued', help: 'queued' }, () => queued);
    counterOf(registry, { name: 'test_refused_total', help: 'refused', labelNames: ['reason'] }, () => [
      { labels: { reason: 'full' }, value: refused },
    ]);
    expect(await registry.metrics()).to.contain('test_queued{service="query"} 3');
    queued = 0;
    refused = 7;
    const text = await registry.metrics();
    expect(text).to.contain('test_queued{service="query"} 0');
    expect(text).to.contain('test_refused_total{reason="full",service="query"} 7');
    expect(text).to.contain('process_cpu_seconds_total');
  });

  it('reads NaN for a gauge whose source fails (never a made-up 0), and the rest of the scrape whole', async () => {
    const registry = createMetricsRegistry('command');
    gaugeOf(registry, { name: 'test_backlog', help: 'backlog' }, () => Promise.reject(new Error('PostgreSQL is down')));
    gaugeOf(registry, { name: 'test_in_progress', help: 'in progress' }, () => 2);
    const text = await registry.metrics();
    expect(text).to.contain('test_in_progress{service="command"} 2');
    expect(text).to.match(/^test_backlog{service="command"} NaN$/im);
  });
});
