import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:http2';
import { credentials, status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { call } from '../support/clients';
import { createTestEnvironment, type TestEnvironment } from '../support/environment';
import type { RunningService } from '../support/processes';
import { MiB, residentBytes, startCommandService } from './harness';

/** The largest output a CompleteEvaluation may carry here: its request is about as large. */
const MAX_OUTPUT = 4 * MiB;
/** What the admitted service may hold of requests at once: 3 of the largest (4 MiB + 64 KiB each). */
const BUDGET = 16 * MiB;
/** Near-max requests sent together: 128 MiB of request bodies in flight at once. */
const CALLS = 32;
/**
 * RSS growth allowed beyond the budget while the burst goes through the admitted service. Most
 * of it is requests already done with: V8 starts a full collection for Buffers only once their
 * memory has grown by about 64 MB since the last one, so the burst leaves garbage whatever the
 * budget (with a budget of one byte, one request held at a time, it grew the service by 35 MiB,
 * and 64 calls by 64 MiB). Beside it: each command in progress uploading its output to S3
 * (the SDK's buffers), and 64 KiB of flow-control window per waiting call (2 MiB). Measured with the 16 MiB budget: 47-79 MiB of growth in all, in nine
 * runs. Without admission the same burst grew the service by 242-259 MiB (the second test).
 */
const SLACK = 96 * MiB;

/** The most the process had resident since the last `resetPeak` (Linux' VmHWM). */
function peakResidentBytes(pid: number): number {
  const kib = /VmHWM:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  if (kib === undefined) throw new Error(`no VmHWM for process ${pid}`);
  return Number(kib) * 1024;
}

/** Resets VmHWM to the present RSS (proc(5), clear_refs "5"). */
function resetPeak(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

const shown = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;

interface Burst {
  /** Peak RSS growth of the service during the burst. */
  readonly growth: number;
  readonly completed: number;
}

describe('fault: many near-max requests at once', function () {
  this.timeout(120_000);
  let env: TestEnvironment;
  const services: RunningService[] = [];
  const clients: EvaluationCommandServiceClient[] = [];
  const output = randomBytes(MAX_OUTPUT - 1024);

  before(async () => {
    env = await createTestEnvironment({ overrides: { MAX_OUTPUT_BYTES: String(MAX_OUTPUT) } });
  });

  after(async () => {
    for (const client of clients) client.close();
    for (const service of services) await service.stop();
    await env?.close();
  });

  /** A command service with the given budget, and a client of its own. */
  async function serviceWithBudget(budget: number): Promise<{ pid: number; client: EvaluationCommandServiceClient }> {
    const service = await startCommandService({ ...env.env, MAX_REQUEST_BYTES_IN_FLIGHT: String(budget) });
    services.push(service);
    const client = new EvaluationCommandServiceClient(service.address, credentials.createInsecure(), {
      'grpc.max_send_message_length': 64 * MiB,
    });
    clients.push(client);
    return { pid: service.pid, client };
  }

  /**
   * Submits and starts CALLS evaluations and a few more, completes those few one by one (JIT,
   * heap, the S3 connection), then the CALLS all at once, and measures the service's peak.
   */
  async function burst(
    prefix: string,
    target: { pid: number; client: EvaluationCommandServiceClient },
  ): Promise<Burst> {
    const { pid, client } = target;
    const warmUp = 4;
    const ids = Array.from({ length: warmUp + CALLS }, (_, i) => `${prefix}-${i}`);
    for (const evalId of ids) {
      await call(client, client.submitEvaluation, {
        evalId,
        code: 'print(1)',
        language: 'python',
        engine: 'docker',
        timeoutSeconds: 30,
        requestId: '',
        metadata: undefined,
      });
      await call(client, client.startEvaluation, { evalId, executorId: 'e', containerId: '', requestId: '' });
    }
    const complete = (evalId: string) =>
      call(client, client.completeEvaluation, { evalId, output, exitCode: 0, requestId: '' }, 60_000);
    for (const evalId of ids.slice(0, warmUp)) await complete(evalId);

    const baseline = residentBytes(pid);
    resetPeak(pid);
    const responses = await Promise.all(ids.slice(warmUp).map(complete));
    return { growth: peakResidentBytes(pid) - baseline, completed: responses.length };
  }

  it('stays within the budget plus slack, the requests it has not read left with the clients, and completes every call', async () => {
    const { growth, completed } = await burst('admitted', await serviceWithBudget(BUDGET));
    expect(completed).to.equal(CALLS);
    expect(growth, `RSS grew by ${shown(growth)}`).to.be.lessThan(BUDGET + SLACK);
  });

  it('goes past the same bound without admission (the bound means something)', async () => {
    // A budget no burst reaches: every request is read at once, as grpc-js alone does.
    const { growth, completed } = await burst('unadmitted', await serviceWithBudget(1024 * 1024 * MiB));
    expect(completed).to.equal(CALLS);
    expect(growth, `RSS grew by ${shown(growth)}`).to.be.greaterThan(BUDGET + SLACK);
  });
});

/**
 * Slow clients: each starts a unary request announcing a near-max message and then trickles it,
 * a byte every 100 ms, holding its share of the byte budget while it does. Two of them hold
 * all of it. Without REQUEST_READ_TIMEOUT_MS they hold it until they give up, and every other
 * caller waits behind them (the ordinary call below then fails at its 5 s deadline).
 */
describe('fault: clients that trickle their requests', function () {
  this.timeout(60_000);
  let env: TestEnvironment;
  let service: RunningService | undefined;
  let client: EvaluationCommandServiceClient | undefined;

  before(async () => {
    env = await createTestEnvironment();
  });

  after(async () => {
    client?.close();
    await service?.stop();
    await env?.close();
  });

  /** A SubmitEvaluation whose 5-byte gRPC prefix announces `announced` bytes, then a byte per 100 ms. */
  function trickle(address: string, announced: number): { status: Promise<number>; stop: () => void } {
    const session = connect(`http://${address}`);
    const request = session.request({
      ':method': 'POST',
      ':path': '/crucible.storage.v1.EvaluationCommandService/SubmitEvaluation',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(announced, 1);
    request.write(prefix);
    const timer = setInterval(() => request.write(Buffer.from([0x0a])), 100);
    const stop = (): void => {
      clearInterval(timer);
      request.close();
      session.close();
    };
    const status = new Promise<number>((resolve) => {
      const take = (headers: Record<string, unknown>): void => {
        if (headers['grpc-status'] !== undefined) resolve(Number(headers['grpc-status']));
      };
      request.on('response', take);
      request.on('trailers', take);
      request.on('data', () => undefined);
      request.on('error', () => resolve(-1));
      request.on('close', () => resolve(-1));
    }).finally(stop);
    return { status, stop };
  }

  it('cuts them after REQUEST_READ_TIMEOUT_MS, and an ordinary call waiting behind them gets through', async () => {
    // Requests of up to 1 MiB (+ 64 KiB of the rest): a budget of 2.5 MiB holds two at once.
    service = await startCommandService({
      ...env.env,
      MAX_OUTPUT_BYTES: String(MiB),
      MAX_CODE_BYTES: String(MiB),
      MAX_REQUEST_BYTES_IN_FLIGHT: String(2.5 * MiB),
      REQUEST_READ_TIMEOUT_MS: '1500',
    });
    const slow = [trickle(service.address, MiB - 1), trickle(service.address, MiB - 1)];
    client = new EvaluationCommandServiceClient(service.address, credentials.createInsecure());
    try {
      const started = Date.now();
      const { evalId } = await call(
        client,
        client.submitEvaluation,
        { evalId: '', code: 'print(1)', language: 'python', engine: 'docker', timeoutSeconds: 30, requestId: '' },
        5_000,
      );
      expect(evalId).to.be.a('string').and.not.equal('');
      expect(Date.now() - started, 'waited for the trickling calls to be cut, not for its deadline').to.be.below(4_000);
      expect(await Promise.all(slow.map((s) => s.status))).to.deep.equal([
        status.DEADLINE_EXCEEDED,
        status.DEADLINE_EXCEEDED,
      ]);
    } finally {
      for (const s of slow) s.stop();
    }
  });
});
