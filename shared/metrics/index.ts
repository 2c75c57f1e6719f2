export { createMetricsRegistry, gaugeOf, counterOf, serveMetrics } from './registry';
export type { MetricsEndpoint, Sample } from './registry';
export { watchPostgresPool, redisErrorCounter, s3RequestObserver } from './dependencies';
