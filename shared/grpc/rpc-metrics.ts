import { status as Status } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/**
 * Where a server's calls are counted: told when each begins, and the code it ended with. One
 * place sees every call, refused by the gate or answered by its handler (shared/grpc/authenticate.ts).
 */
export interface RpcMetrics {
  /** `streaming`: the call answers with a stream (its length is the client's, not a latency). */
  begin(method: string, streaming: boolean): (code: Status) => void;
}

export const NO_RPC_METRICS: RpcMetrics = { begin: () => () => undefined };

// From half a millisecond (a lookup from Redis) to ten seconds (a large output through S3).
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createRpcMetrics(registry: Registry): RpcMetrics {
  const duration = new Histogram({
    name: 'crucible_rpc_duration_seconds',
    help: 'Calls answered with one message, by method and status code: how long each took',
    labelNames: ['method', 'code'],
    buckets: BUCKETS,
    registers: [registry],
  });
  const streams = new Counter({
    name: 'crucible_rpc_streams_total',
    help: 'Calls answered with a stream that ended, by method and status code',
    labelNames: ['method', 'code'],
    registers: [registry],
  });
  const open = new Gauge({
    name: 'crucible_rpc_streams_open',
    help: 'Calls answered with a stream, open now, by method',
    labelNames: ['method'],
    registers: [registry],
  });
  return {
    begin(method, streaming) {
      const started = process.hrtime.bigint();
      if (streaming) open.inc({ method });
      let ended = false;
      return (code) => {
        if (ended) return;
        ended = true;
        // grpc-js' Status is a numeric enum: indexed by a code, it names it.
        const labels = { method, code: Status[code] ?? String(code) };
        if (!streaming) {
          duration.observe(labels, Number(process.hrtime.bigint() - started) / 1e9);
          return;
        }
        open.dec({ method });
        streams.inc(labels);
      };
    },
  };
}
