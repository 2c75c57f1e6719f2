import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { credentials } from '@grpc/grpc-js';
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
