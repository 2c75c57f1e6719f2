import { readFileSync } from 'node:fs';
import { Client, credentials, Metadata, status, type ServiceDefinition, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import {
  AppendLogsRequest,
  CancelEvaluationRequest,
  CompleteEvaluationRequest,
  CompleteEvaluationStreamRequest,
  CreateOutputUploadRequest,
  EvaluationCommandServiceService,
  FailEvaluationRequest,
  RecordMetricsRequest,
  RecordSecurityEventRequest,
  ReportExecutorHealthRequest,
  StartEvaluationRequest,
  SubmitEvaluationRequest,
} from '../../shared/generated/crucible/storage/v1/command_service';
import {
  EvaluationStatus,
  ExecutorStatus,
  FailureReason,
  LogStream,
} from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  CountEvaluationsRequest,
  EvaluationQueryServiceService,
  GetEvaluationEventsRequest,
  GetEvaluationMetricsRequest,
  GetEvaluationRequest,
  GetOutputUrlRequest,
  GetProjectionStatusRequest,
  GetQueueMetricsRequest,
  ListEvaluationsRequest,
  ListExecutorsRequest,
  ListSecurityEventsRequest,
  OutputKind,
  ReadLogsRequest,
  ReadOutputRequest,
  WaitEvaluationRequest,
  WatchEvaluationRequest,
  WatchEvaluationsRequest,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { expectReadModelsEqualLog } from '../fault/harness';
import { call } from '../support/clients';
import { aSubmission } from '../support/requests';
import { mutate } from '../support/mutations';
import { seededRandom } from '../support/random';
import { startServices, type RunningServices } from '../support/services';

/** How long to fuzz (CI: a bounded run; `make fuzz`: longer) and with which seed. */
const FUZZ_SECONDS = Number(process.env.FUZZ_SECONDS ?? '20');
const FUZZ_SEED = Number(process.env.FUZZ_SEED ?? '20261207');

/** What a hostile request may be answered with: anything but the server's own failure. */
const PROPER = new Set<status>([
  status.OK,
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.ALREADY_EXISTS,
  status.FAILED_PRECONDITION,
  status.ABORTED,
  status.OUT_OF_RANGE,
  status.RESOURCE_EXHAUSTED,
  status.PERMISSION_DENIED,
  // A stream that follows changes runs until its deadline; a client stream cut for idling.
  status.DEADLINE_EXCEEDED,
  status.CANCELLED,
]);

const identity = (bytes: Buffer): Buffer => bytes;

/** RSS of a process, from /proc. */
function rssBytes(pid: number): number {
  const line = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(line?.[1] ?? 0) * 1024;
}

/**
 * Every RPC of both services, fed valid requests mutated at random (bits flipped, bytes
 * replaced, truncated, lengths that lie, wrong wire types, invalid UTF-8, 20,000-fold repeated
 * fields, messages nested 10,000 deep, groups that never end) for a bounded time with a fixed
 * seed: every answer is a proper status (never INTERNAL or UNKNOWN), both processes stay up
 * with bounded memory, and the read models still equal the log (nothing half-written).
 * FUZZ_SECONDS and FUZZ_SEED choose the run (`make fuzz` runs 5 minutes); a failure names the
 * seed, the RPC and the mutation.
 */
describe('fuzz: every RPC', function () {
  this.timeout((FUZZ_SECONDS + 120) * 1000);
  let services: RunningServices;
  let evalIds: string[];

  before(async () => {
    services = await startServices({ overrides: { CLIENT_STREAM_IDLE_MS: '2000' } });
    const { command } = services.clients;
    const submit = () =>
      call(command, command.submitEvaluation, aSubmission({ code: 'print("fuzz")', metadata: { team: 'fuzz' } }));
    const queued = await submit();
    const running = await submit();
    await call(command, command.startEvaluation, {
      evalId: running.evalId,
      executorId: 'x-1',
      containerId: 'c-1',
      requestId: '',
    });
    evalIds = [queued.evalId, running.evalId];
  });

  after(() => services?.close());

  /** A valid request of each RPC (the first of a client stream's messages, then the next). */
  function samples(): Record<string, Buffer[]> {
    const [queued, running] = evalIds as [string, string];
    const bytes = <T>(codec: { encode(m: T): { finish(): Uint8Array }; fromPartial(o: object): T }, o: object) =>
      Buffer.from(codec.encode(codec.fromPartial(o)).finish());
    return {
      SubmitEvaluation: [
        bytes(SubmitEvaluationRequest, {
          code: 'print(1)',
          language: 'python',
          engine: 'docker',
          timeoutSeconds: 30,
          metadata: { a: 'b', n: 1, list: [1, 'x', { deep: true }] },
        }),
      ],
      StartEvaluation: [bytes(StartEvaluationRequest, { evalId: queued, executorId: 'x-2', containerId: 'c-2' })],
      CompleteEvaluation: [
        bytes(CompleteEvaluationRequest, { evalId: running, output: Buffer.from('out'), exitCode: 0 }),
      ],
      CompleteEvaluationStream: [
        bytes(CompleteEvaluationStreamRequest, { header: { evalId: running, exitCode: 0, outputSize: '3' } }),
        bytes(CompleteEvaluationStreamRequest, { outputChunk: Buffer.from('out') }),
      ],
      CreateOutputUpload: [bytes(CreateOutputUploadRequest, { evalId: running, size: '10', sha256: 'ab'.repeat(32) })],
      FailEvaluation: [
        bytes(FailEvaluationRequest, {
          evalId: running,
          error: 'boom',
          exitCode: 1,
          reason: FailureReason.FAILURE_REASON_ERROR,
        }),
      ],
      CancelEvaluation: [bytes(CancelEvaluationRequest, { evalId: queued, reason: 'fuzz' })],
      RecordMetrics: [
        bytes(RecordMetricsRequest, { evalId: running, metrics: [{ name: 'loss', value: 0.5, unit: '', step: '1' }] }),
      ],
      RecordSecurityEvent: [
        bytes(RecordSecurityEventRequest, {
          containerCreated: {
            evalId: running,
            containerId: 'c-1',
            image: 'python:3',
            limits: { cpuCores: 1, memoryBytes: '1024', pids: '8', network: 'none', diskBytes: '0', timeoutSeconds: 1 },
          },
        }),
      ],
      ReportExecutorHealth: [
        bytes(ReportExecutorHealthRequest, {
          executorId: 'x-1',
          status: ExecutorStatus.EXECUTOR_STATUS_HEALTHY,
          capacity: 2,
          running: 1,
          version: 'v1',
          metrics: { cpu: 0.5 },
        }),
      ],
      AppendLogs: [
        bytes(AppendLogsRequest, { header: { evalId: running, stream: LogStream.LOG_STREAM_STDOUT } }),
        bytes(AppendLogsRequest, { chunk: { offset: '0', data: Buffer.from('hello\n') } }),
      ],
      GetEvaluation: [bytes(GetEvaluationRequest, { evalId: running })],
      ListEvaluations: [
        bytes(ListEvaluationsRequest, {
          pageSize: 10,
          filter: { statuses: [EvaluationStatus.EVALUATION_STATUS_RUNNING], language: 'python', metadata: { a: 'b' } },
        }),
      ],
      CountEvaluations: [bytes(CountEvaluationsRequest, { filter: { language: 'python' } })],
      ReadOutput: [bytes(ReadOutputRequest, { evalId: running, kind: OutputKind.OUTPUT_KIND_CODE, offset: '1' })],
      GetOutputUrl: [bytes(GetOutputUrlRequest, { evalId: running, kind: OutputKind.OUTPUT_KIND_OUTPUT })],
      ReadLogs: [bytes(ReadLogsRequest, { evalId: running, stream: LogStream.LOG_STREAM_STDOUT, offset: '0' })],
      WatchEvaluation: [bytes(WatchEvaluationRequest, { evalId: running })],
      WatchEvaluations: [bytes(WatchEvaluationsRequest, { afterPosition: '0', evalIds: [running] })],
      GetProjectionStatus: [bytes(GetProjectionStatusRequest, {})],
      GetEvaluationEvents: [bytes(GetEvaluationEventsRequest, { evalId: running, pageSize: 5 })],
      WaitEvaluation: [bytes(WaitEvaluationRequest, { evalId: running })],
      GetEvaluationMetrics: [bytes(GetEvaluationMetricsRequest, { evalId: running, names: ['loss'], pageSize: 5 })],
      ListSecurityEvents: [bytes(ListSecurityEventsRequest, { evalId: running, pageSize: 5 })],
      GetQueueMetrics: [bytes(GetQueueMetricsRequest, {})],
      ListExecutors: [bytes(ListExecutorsRequest, {})],
    };
  }

  function rpcs() {
    const of = (definition: ServiceDefinition, address: string) =>
      Object.values(definition).map((method) => ({
        name: method.path.split('/')[2] as string,
        path: method.path,
        address,
        requestStream: method.requestStream,
        responseStream: method.responseStream,
      }));
    return [
      ...of(EvaluationCommandServiceService, services.command.address),
      ...of(EvaluationQueryServiceService, services.query.address),
    ];
  }

  /** The status `messages` get from the RPC (a stream's, once it ends: its deadline, at the latest). */
  function answerOf(client: Client, rpc: ReturnType<typeof rpcs>[number], messages: Buffer[]): Promise<status> {
    const options = { deadline: Date.now() + 2_000 };
    return new Promise((resolve) => {
      const done = (err: ServiceError | null): void => resolve(err === null ? status.OK : err.code);
      if (rpc.requestStream) {
        const stream = client.makeClientStreamRequest(rpc.path, identity, identity, new Metadata(), options, done);
        for (const message of messages) stream.write(message);
        stream.end();
      } else if (rpc.responseStream) {
        const stream = client.makeServerStreamRequest(
          rpc.path,
          identity,
          identity,
          messages[0] as Buffer,
          new Metadata(),
          options,
        );
        stream.on('data', () => undefined);
        stream.on('error', (err: ServiceError) => resolve(err.code));
        stream.on('end', () => resolve(status.OK));
      } else {
        client.makeUnaryRequest(rpc.path, identity, identity, messages[0] as Buffer, new Metadata(), options, done);
      }
    });
  }

  it('has a valid request of every RPC to start from', () => {
    expect(Object.keys(samples()).sort()).to.deep.equal(
      rpcs()
        .map((rpc) => rpc.name)
        .sort(),
    );
  });

  it(`answers every mutated request with a proper status, stays up with bounded memory, and writes nothing partial (seed ${FUZZ_SEED}, ${FUZZ_SECONDS} s)`, async () => {
    const random = seededRandom(FUZZ_SEED);
    const all = rpcs();
    const valid = samples();
    const clients = new Map<string, Client>();
    const clientOf = (address: string): Client => {
      let client = clients.get(address);
      if (client === undefined) {
        client = new Client(address, credentials.createInsecure(), {
          'grpc.max_send_message_length': 64 * 1024 * 1024,
        });
        clients.set(address, client);
      }
      return client;
    };
    const pids = [services.command.pid, services.query.pid];
    const rssBefore = pids.map(rssBytes);
    const peak = [...rssBefore];
    const improper: string[] = [];
    const codes = new Map<string, number>();
    let sent = 0;
    const until = Date.now() + FUZZ_SECONDS * 1000;
    const sampler = setInterval(
      () => pids.forEach((pid, i) => (peak[i] = Math.max(peak[i] as number, rssBytes(pid)))),
      250,
    );
    // Eight hostile clients at once, each sending its next request as soon as the last is answered.
    const worker = async (): Promise<void> => {
      while (Date.now() < until && improper.length === 0) {
        const rpc = all[Math.floor(random() * all.length)] as (typeof all)[number];
        const messages = valid[rpc.name] as Buffer[];
        const which = Math.floor(random() * messages.length);
        const mutation = mutate(messages[which] as Buffer, random);
        const sentMessages = messages.map((m, i) => (i === which ? mutation.bytes : m));
        // Sometimes a client stream stops before its last message.
        if (rpc.requestStream && random() < 0.2) sentMessages.pop();
        const code = await answerOf(clientOf(rpc.address), rpc, sentMessages);
        sent += 1;
        const name = status[code] ?? String(code);
        codes.set(name, (codes.get(name) ?? 0) + 1);
        if (!PROPER.has(code))
          improper.push(`${rpc.name} / ${mutation.name} (${mutation.bytes.length} bytes): ${name}`);
      }
    };
    try {
      await Promise.all(Array.from({ length: 8 }, worker));
    } finally {
      clearInterval(sampler);
      for (const client of clients.values()) client.close();
    }
    process.stdout.write(
      `      fuzz: ${sent} requests, seed ${FUZZ_SEED}: ${JSON.stringify(Object.fromEntries(codes))}\n`,
    );
    if (improper.length > 0) {
      const tail = (logs: string) =>
        logs
          .split('\n')
          .filter((l) => !l.includes('"level":"debug"'))
          .slice(-20)
          .join('\n');
      process.stdout.write(
        `command service:\n${tail(services.command.logs())}\nquery service:\n${tail(services.query.logs())}\n`,
      );
    }
    expect(improper, `seed ${FUZZ_SEED}`).to.deep.equal([]);
    expect(sent).to.be.greaterThan(100);
    // Both services are still there, and still serve.
    const { command, query } = services.clients;
    const { evalId, position } = await call(command, command.submitEvaluation, aSubmission({ code: 'print("after")' }));
    expect((await call(query, query.getEvaluation, { evalId, minPosition: position })).evaluation?.evalId).to.equal(
      evalId,
    );
    // Memory: what a process grew by at its peak stays far below what the requests would hold.
    pids.forEach((_, i) =>
      expect((peak[i] as number) - (rssBefore[i] as number), `process ${i}`).to.be.below(512 * 1024 * 1024),
    );
    // Nothing half-written: the read models equal the log, every evaluation of PostgreSQL included.
    await expectReadModelsEqualLog(services.environment.env, services.environment.config.databaseUrl);
  });
});
