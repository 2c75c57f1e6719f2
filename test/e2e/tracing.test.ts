import { randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import type { SubmitEvaluationResponse } from '../../shared/generated/crucible/storage/v1/command_service';
import { call } from '../support/clients';
import { aSubmission } from '../support/requests';
import { startServices, type RunningServices } from '../support/services';

interface ReceivedSpan {
  readonly service: string;
  readonly name: string;
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string;
  readonly attributes: Record<string, unknown>;
}

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
}
interface OtlpExport {
  resourceSpans?: {
    resource?: { attributes?: { key: string; value: OtlpValue }[] };
    scopeSpans?: {
      spans?: {
        name: string;
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        attributes?: { key: string; value: OtlpValue }[];
      }[];
    }[];
  }[];
}

const valueOf = (value: OtlpValue): unknown => value.stringValue ?? value.intValue;

/** An OTLP/HTTP (JSON) collector on loopback: it keeps every span it receives and says when. */
async function startCollector(): Promise<{
  port: number;
  spans: ReceivedSpan[];
  events: EventEmitter;
  server: Server;
}> {
  const spans: ReceivedSpan[] = [];
  const events = new EventEmitter();
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as OtlpExport;
      for (const resourceSpans of body.resourceSpans ?? []) {
        const service = String(
          valueOf(resourceSpans.resource?.attributes?.find((a) => a.key === 'service.name')?.value ?? {}),
        );
        for (const scope of resourceSpans.scopeSpans ?? [])
          for (const span of scope.spans ?? [])
            spans.push({
              service,
              name: span.name,
              traceId: span.traceId,
              spanId: span.spanId,
              parentSpanId: span.parentSpanId ?? '',
              attributes: Object.fromEntries((span.attributes ?? []).map((a) => [a.key, valueOf(a.value)])),
            });
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      events.emit('spans');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, spans, events, server };
}

describe('e2e: traces from a command to its watchers (OTEL_EXPORTER_OTLP_ENDPOINT)', function () {
  this.timeout(60_000);
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let services: RunningServices;

  before(async () => {
    collector = await startCollector();
    services = await startServices({
      overrides: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.port}` },
    });
  });
  after(async () => {
    await services?.close();
    collector?.server.close();
  });

  /** Resolves once the collector holds spans that `ready` accepts (each arrival is an event). */
  async function spansWhen(ready: (spans: ReceivedSpan[]) => boolean): Promise<ReceivedSpan[]> {
    const timeout = setTimeout(() => collector.events.emit('error', new Error('spans never came')), 20_000);
    try {
      while (!ready(collector.spans)) await once(collector.events, 'spans');
      return collector.spans;
    } finally {
      clearTimeout(timeout);
    }
  }

  it("puts the command's RPC, the projection and the delivery to watchers on every replica into the caller's trace", async () => {
    const traceId = randomBytes(16).toString('hex');
    const callerSpan = randomBytes(8).toString('hex');
    const metadata = new Metadata();
    metadata.set('traceparent', `00-${traceId}-${callerSpan}-01`);
    const { command } = services.clients;
    const submitted = await new Promise<SubmitEvaluationResponse>((resolve, reject) =>
      command.submitEvaluation(aSubmission({ evalId: 'traced-1' }), metadata, (err, answer) =>
        err !== null ? reject(err) : resolve(answer),
      ),
    );

    const ofTrace = (spans: ReceivedSpan[]): ReceivedSpan[] => spans.filter((s) => s.traceId === traceId);
    const spans = ofTrace(await spansWhen((all) => ofTrace(all).some((s) => s.name === 'stream update')));
    const rpc = spans.find((s) => s.name === 'SubmitEvaluation');
    expect(rpc, JSON.stringify(spans)).to.include({ service: 'crucible-command', parentSpanId: callerSpan });
    const projection = spans.find((s) => s.name === 'projection');
    const delivery = spans.find((s) => s.name === 'stream update');
    expect(projection).to.include({ service: 'crucible-query', parentSpanId: rpc?.spanId });
    expect(delivery).to.include({ service: 'crucible-query', parentSpanId: rpc?.spanId });
    expect(projection?.attributes['crucible.position']).to.equal(submitted.position);
  });

  it('begins a trace of its own for a call without a traceparent, and marks a refused call', async () => {
    const { query } = services.clients;
    await call(query, query.getEvaluation, { evalId: 'traced-1' });
    const refused = await call(query, query.getEvaluation, { evalId: '' }).catch((err: unknown) => err);
    expect(refused).to.be.instanceOf(Error);
    const spans = await spansWhen(
      (all) => all.filter((s) => s.name === 'GetEvaluation' && s.service === 'crucible-query').length >= 2,
    );
    const lookups = spans.filter((s) => s.name === 'GetEvaluation');
    expect(lookups.map((s) => s.parentSpanId)).to.deep.equal(['', '']);
    expect(lookups.map((s) => s.attributes['rpc.grpc.status_code']).sort()).to.deep.equal([0, 3]);
  });
});
