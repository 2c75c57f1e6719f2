import { openAccess } from '../../../shared/grpc';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { loadConfig } from '../../../shared/config';
import {
  EvaluationCommandServiceClient,
  type CompleteEvaluationResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { GrpcServer } from '../../../shared/grpc';
import { silentLogger } from '../../../shared/logging';
import type { CommandExecutor } from '../../../services/command/application/command-executor';
import type { CommandResult } from '../../../services/command/domain';
import { createCommandServer } from '../../../services/command/server';

const MiB = 1024 * 1024;

/**
 * Waits until `condition` holds, checking after each turn of the event loop: the server's
 * admission counters change on I/O that no event of the test's own announces.
 */
async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** An executor that records the evaluations it is given and holds the first until `open`. */
function gatedExecutor(): { executor: CommandExecutor; seen: string[]; open: () => void } {
  const seen: string[] = [];
  let open: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const answer = async (evalId: string): Promise<CommandResult> => {
    seen.push(evalId);
    if (seen.length === 1) await gate;
    return { evalId, revision: '3', position: String(seen.length) };
  };
  return {
    seen,
    open: () => open(),
    executor: {
      execute: (command) => answer(command.evalId ?? ''),
      completeStreamed: (header) => answer(header.evalId),
      appendLogs: async (target) => ({ size: 0, result: await answer(target.evalId) }),
      load: () => ({ inProgress: 0, queued: 0, shedQueueFull: 0, shedDeadline: 0 }),
    },
  };
}

describe('command service: requests wait to be read once the budget is taken', function () {
  this.timeout(30_000);
  // A budget of one byte: one request at a time, the first held while its command runs.
  const limits = loadConfig({
    ENVIRONMENT: 'test',
    MAX_OUTPUT_BYTES: String(MiB),
    MAX_REQUEST_BYTES_IN_FLIGHT: '1',
  }).limits;
  const output = Buffer.alloc(512 * 1024, 7);
  const gated = gatedExecutor();
  let server: GrpcServer;
  let client: EvaluationCommandServiceClient;

  before(async () => {
    server = createCommandServer({
      access: openAccess(silentLogger),
      executor: gated.executor,
      limits,
      logger: silentLogger,
    });
    const port = await server.listen('127.0.0.1', 0);
    client = new EvaluationCommandServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await server?.shutdown(1000);
  });

  function complete(evalId: string, deadlineMs: number) {
    let settle: (outcome: ServiceError | CompleteEvaluationResponse) => void = () => undefined;
    const outcome = new Promise<ServiceError | CompleteEvaluationResponse>((resolve) => (settle = resolve));
    const call = client.completeEvaluation(
      { evalId, output, exitCode: 0, requestId: '' },
      new Metadata(),
      { deadline: new Date(Date.now() + deadlineMs) },
      (err, response) => settle(err ?? response),
    );
    return { call, outcome };
  }

  it('reads them in turn, lets one that times out or is cancelled meanwhile go, and loses none', async () => {
    const first = complete('first', 20_000);
    await until('the first command runs', () => gated.seen.length === 1);
    expect(server.admission.reserved, 'the first request, held at its size while it runs').to.be.within(
      output.length,
      output.length + 100,
    );

    const second = complete('second', 20_000);
    await until('the second waits', () => server.admission.waiting === 1);

    const late = complete('late', 300);
    await until('the late one waits', () => server.admission.waiting === 2);
    expect(((await late.outcome) as ServiceError).code).to.equal(status.DEADLINE_EXCEEDED);
    await until('the late one has left the queue', () => server.admission.waiting === 1);

    const cancelled = complete('cancelled', 20_000);
    await until('the cancelled one waits', () => server.admission.waiting === 2);
    cancelled.call.cancel();
    expect(((await cancelled.outcome) as ServiceError).code).to.equal(status.CANCELLED);
    await until('the cancelled one has left the queue', () => server.admission.waiting === 1);

    gated.open();
    expect(await first.outcome).to.include({ evalId: 'first' });
    expect(await second.outcome).to.include({ evalId: 'second' });
    expect(gated.seen, 'requests that reached a handler').to.deep.equal(['first', 'second']);
    await until('every reservation is back', () => server.admission.reserved === 0);
    expect(server.admission.waiting).to.equal(0);
    expect(server.admission.peakReserved, 'never more than one largest request at once').to.be.lessThan(2 * MiB);
  });
});
