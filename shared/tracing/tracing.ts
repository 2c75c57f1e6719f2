import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import { status as Status } from '@grpc/grpc-js';

/**
 * Traces of a command's way to its watchers: the RPC that carried it (a server span, child of
 * the caller's `traceparent` when it sent one), then on each query replica the projection that
 * applied its change and the delivery to the watchers. What crosses a process is a W3C
 * `traceparent` string: in gRPC metadata from the caller, in the change message from the
 * command service to the replicas (redis pub/sub, a hint like the rest of the message: a change
 * caught up from the log has none, and its trace ends at the command service).
 *
 * The rest of the code sees strings and callbacks, never OpenTelemetry's types; no global
 * provider is registered. Off (every call a no-op) unless OTEL_EXPORTER_OTLP_ENDPOINT is set.
 */
export interface Tracing {
  /** A server span for one call, under the caller's `traceparent` when its metadata carry one. */
  serverSpan(method: string, metadata: CallMetadata): CallSpan;
  /**
   * A span under `parent` (a traceparent from another process) that ran from `startedAt` (ms
   * since the epoch) until now.
   */
  record(name: string, parent: string, startedAt: number, attributes: Attributes): void;
  /** Sends what is still buffered. */
  shutdown(): Promise<void>;
}

export interface CallSpan {
  /** This span's traceparent (undefined when it is not sampled, or tracing is off). */
  readonly traceparent: string | undefined;
  end(code: Status): void;
}

/** What a span needs of a call's gRPC metadata (grpc-js' Metadata has it). */
interface CallMetadata {
  get(key: string): unknown[];
}

const NO_SPAN: CallSpan = { traceparent: undefined, end: () => undefined };

export const NO_TRACING: Tracing = {
  serverSpan: () => NO_SPAN,
  record: () => undefined,
  shutdown: () => Promise.resolve(),
};

const propagator = new W3CTraceContextPropagator();
const getter = { get: (carrier: Record<string, string>, key: string) => carrier[key], keys: Object.keys };
const setter = { set: (carrier: Record<string, string>, key: string, value: string) => void (carrier[key] = value) };

function contextOf(traceparent: string | undefined): Context {
  return traceparent === undefined ? ROOT_CONTEXT : propagator.extract(ROOT_CONTEXT, { traceparent }, getter);
}

function traceparentOf(context: Context): string | undefined {
  const carrier: Record<string, string> = {};
  propagator.inject(context, carrier, setter);
  return carrier.traceparent;
}

export function createTracing(options: {
  readonly service: 'command' | 'query';
  /** OTLP/HTTP endpoint (`http://collector:4318`); empty: tracing off. */
  readonly endpoint: string;
  /** Share of traces begun here that are kept (a caller's sampled trace is always followed). */
  readonly sampleRatio: number;
}): Tracing {
  if (options.endpoint === '') return NO_TRACING;
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': `crucible-${options.service}` }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(options.sampleRatio) }),
    spanProcessors: [
      // A collector that is down costs a span batch, never a call: exports are asynchronous,
      // bounded in time, and dropped when the queue is full.
      new BatchSpanProcessor(
        new OTLPTraceExporter({ url: `${options.endpoint.replace(/\/$/, '')}/v1/traces`, timeoutMillis: 3000 }),
        { scheduledDelayMillis: 1000 },
      ),
    ],
  });
  const tracer = provider.getTracer('crucible-storage');
  return {
    serverSpan(method, metadata) {
      const [sent] = metadata.get('traceparent');
      const parent = isTraceparent(sent) ? sent : undefined;
      const span = tracer.startSpan(
        method,
        { kind: SpanKind.SERVER, attributes: { 'rpc.method': method } },
        contextOf(parent),
      );
      const traceparent = span.isRecording() ? traceparentOf(trace.setSpan(ROOT_CONTEXT, span)) : undefined;
      return {
        traceparent,
        end(code) {
          span.setAttribute('rpc.grpc.status_code', code);
          if (code !== Status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message: Status[code] });
          span.end();
        },
      };
    },
    record(name, parent, startedAt, attributes) {
      tracer.startSpan(name, { kind: SpanKind.CONSUMER, startTime: startedAt, attributes }, contextOf(parent)).end();
    },
    shutdown: () => provider.shutdown(),
  };
}

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** Whether a caller's `value` is a W3C traceparent of version 00: anything else is dropped. */
function isTraceparent(value: unknown): value is string {
  return typeof value === 'string' && TRACEPARENT.test(value);
}
