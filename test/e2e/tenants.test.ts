import { status, type ClientReadableStream } from '@grpc/grpc-js';
import { expect } from 'chai';
import type { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationStatus, ExecutorStatus, LogStream } from '../../shared/generated/crucible/storage/v1/evaluation';
import { OutputKind, type WatchEvaluationsResponse } from '../../shared/generated/crucible/storage/v1/query_service';
import { call, drainStream, expectError, readStream, type Clients } from '../support/clients';
import { startJwtDeployment, type JwtDeployment } from '../support/jwt-deployment';
import { aSubmission } from '../support/requests';

/** Above CODE_INLINE_MAX_BYTES (100 KiB): the code goes to S3, so GetOutputUrl can sign it. */
const LARGE_CODE = `# ${'x'.repeat(100)}\n`.repeat(1500);

/** What one tenant has: an API caller, an executor, and its evaluations in each state. */
interface Tenant {
  readonly name: string;
  api: Clients;
  executor: Clients;
  readonly executorId: string;
  /** Completed, with output, logs, metrics and a security event; its code is in S3. */
  done: string;
  /** Still queued. */
  waiting: string;
}

/** The messages of a server stream until it ends, and how it ended. */
async function drain<T>(stream: ClientReadableStream<T>): Promise<{ messages: T[]; code: status | 'OK' }> {
  const { messages, failed } = await drainStream(stream);
  return { messages, code: failed === undefined ? 'OK' : failed.code };
}

function appendLogs(command: EvaluationCommandServiceClient, evalId: string, text: string): Promise<status | 'OK'> {
  return new Promise((resolve) => {
    const stream = command.appendLogs((err) => resolve(err === null ? 'OK' : err.code));
    stream.write({ header: { evalId, stream: LogStream.LOG_STREAM_STDOUT } });
    stream.write({ chunk: { offset: '0', data: Buffer.from(text) } });
    stream.end();
  });
}

/**
 * Two tenants on one deployment (JWT credentials naming `acme` and `globex`): each reads, lists,
 * counts, watches and downloads only its own evaluations. Another tenant's id is NOT_FOUND, as
 * an id nobody has: a caller cannot even learn that it exists.
 */
describe('e2e: tenants never see each other', function () {
  this.timeout(120_000);
  let deployment: JwtDeployment;
  const tenants: Record<'acme' | 'globex', Tenant> = {
    acme: { name: 'acme', executorId: 'exec-acme' } as Tenant,
    globex: { name: 'globex', executorId: 'exec-globex' } as Tenant,
  };
  const { acme, globex } = tenants;

  /** One tenant's evaluations, each kind of record written by its own executor. */
  async function populate(tenant: Tenant): Promise<void> {
    const { command } = tenant.api;
    const exec = tenant.executor.command;
    tenant.done = (await call(command, command.submitEvaluation, aSubmission({ code: LARGE_CODE }))).evalId;
    tenant.waiting = (await call(command, command.submitEvaluation, aSubmission())).evalId;
    const evalId = tenant.done;
    await call(exec, exec.startEvaluation, {
      evalId,
      executorId: tenant.executorId,
      containerId: 'c-1',
      requestId: '',
    });
    await call(exec, exec.recordMetrics, {
      evalId,
      metrics: [{ name: 'loss', value: 0.5, unit: '', step: '1', timestamp: new Date() }],
      requestId: '',
    });
    await call(exec, exec.recordSecurityEvent, {
      evalId,
      containerCreated: {
        evalId,
        containerId: 'c-1',
        image: `${tenant.name}:latest`,
        limits: { cpuCores: 1, memoryBytes: '1048576', pids: '8', network: 'none', diskBytes: '0', timeoutSeconds: 60 },
      },
      requestId: '',
    });
    expect(await appendLogs(exec, evalId, `${tenant.name} log\n`)).to.equal('OK');
    await call(exec, exec.completeEvaluation, {
      evalId,
      output: Buffer.from(`${tenant.name} output`),
      exitCode: 0,
      requestId: '',
    });
    await call(exec, exec.reportExecutorHealth, {
      executorId: tenant.executorId,
      status: ExecutorStatus.EXECUTOR_STATUS_HEALTHY,
      capacity: 1,
      running: 0,
      version: 'e2e',
      metrics: {},
    });
  }

  before(async () => {
    deployment = await startJwtDeployment('tenants');
    for (const tenant of [acme, globex]) {
      tenant.api = await deployment.clientsOf(`api-${tenant.name}`, ['api'], tenant.name);
      tenant.executor = await deployment.clientsOf(tenant.executorId, ['executor'], tenant.name);
      await populate(tenant);
    }
    // Every query below reads the read models at least this far.
    const { query } = globex.api;
    await call(query, query.getEvaluation, { evalId: globex.done, minPosition: '1' });
  });

  after(async () => {
    for (const tenant of [acme, globex]) {
      tenant.api?.close();
      tenant.executor?.close();
    }
    await deployment?.close();
  });

  /** The status of a unary query, OK or its code. */
  const codeOf = (promise: Promise<unknown>): Promise<status | 'OK'> =>
    promise.then(
      () => 'OK' as const,
      (err: { code: status }) => err.code,
    );

  /** Each per-evaluation query of `caller` for `evalId`: OK or its code. */
  async function perEvaluation(caller: Tenant, evalId: string): Promise<Record<string, status | 'OK'>> {
    const { query } = caller.api;
    const position = (await call(query, query.getProjectionStatus, {})).checkpoint;
    return {
      GetEvaluation: await codeOf(call(query, query.getEvaluation, { evalId })),
      WaitEvaluation: await codeOf(call(query, query.waitEvaluation, { evalId })),
      GetEvaluationEvents: await codeOf(
        call(query, query.getEvaluationEvents, { evalId, afterRevision: '0', pageSize: 0, pageToken: '' }),
      ),
      GetEvaluationMetrics: await codeOf(
        call(query, query.getEvaluationMetrics, { evalId, names: [], pageSize: 0, pageToken: '' }),
      ),
      GetOutputUrl: await codeOf(call(query, query.getOutputUrl, { evalId, kind: OutputKind.OUTPUT_KIND_CODE })),
      ReadOutput: (
        await drain(query.readOutput({ evalId, kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' }))
      ).code,
      ReadLogs: (
        await drain(
          query.readLogs({ evalId, stream: LogStream.LOG_STREAM_STDOUT, offset: '0', length: '0', follow: false }),
        )
      ).code,
      // The evaluation ended: its watch replays and ends.
      WatchEvaluation: (await drain(query.watchEvaluation({ evalId }))).code,
      // min_position known to be applied: the answer is about the id, not about freshness.
      ReadYourWrite: await codeOf(call(query, query.getEvaluation, { evalId, minPosition: position })),
    };
  }

  const everyCode = (code: status | 'OK'): Record<string, status | 'OK'> =>
    Object.fromEntries(
      [
        'GetEvaluation',
        'WaitEvaluation',
        'GetEvaluationEvents',
        'GetEvaluationMetrics',
        'GetOutputUrl',
        'ReadOutput',
        'ReadLogs',
        'WatchEvaluation',
        'ReadYourWrite',
      ].map((rpc) => [rpc, code]),
    );

  it("answers every per-evaluation query and stream for one's own id, and NOT_FOUND for the other tenant's", async () => {
    for (const [caller, other] of [
      [acme, globex],
      [globex, acme],
    ] as const) {
      expect(await perEvaluation(caller, caller.done), `${caller.name} on its own`).to.deep.equal(everyCode('OK'));
      expect(await perEvaluation(caller, other.done), `${caller.name} on ${other.name}'s`).to.deep.equal(
        everyCode(status.NOT_FOUND),
      );
      // The same answer as an id nobody has: nothing tells the two apart.
      expect(await perEvaluation(caller, 'nobody-has-this-id')).to.deep.equal(everyCode(status.NOT_FOUND));
    }
  });

  it("serves one's own bytes and signs URLs for them; the URL is for the caller's object", async () => {
    const { query } = acme.api;
    const output = await drain(
      query.readOutput({ evalId: acme.done, kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' }),
    );
    expect(Buffer.concat(output.messages.map((m) => Buffer.from(m.chunk))).toString()).to.equal('acme output');
    const logs = await drain(
      query.readLogs({
        evalId: acme.done,
        stream: LogStream.LOG_STREAM_STDOUT,
        offset: '0',
        length: '0',
        follow: false,
      }),
    );
    expect(Buffer.concat(logs.messages.map((m) => Buffer.from(m.data))).toString()).to.equal('acme log\n');
    const signed = await call(query, query.getOutputUrl, { evalId: acme.done, kind: OutputKind.OUTPUT_KIND_CODE });
    expect(Buffer.from(await (await fetch(signed.url)).arrayBuffer()).toString()).to.equal(LARGE_CODE);
  });

  it("lists, counts and measures the queue of the caller's tenant only", async () => {
    for (const [caller, other] of [
      [acme, globex],
      [globex, acme],
    ] as const) {
      const { query } = caller.api;
      const listed = await call(query, query.listEvaluations, { status: 0, pageSize: 100, pageToken: '' });
      expect(listed.evaluations.map((e) => e.evalId).sort()).to.deep.equal([caller.done, caller.waiting].sort());
      expect(listed.evaluations.every((e) => e.tenantId === caller.name)).to.equal(true);
      const filtered = await call(query, query.listEvaluations, {
        status: 0,
        pageSize: 100,
        pageToken: '',
        filter: {
          statuses: [EvaluationStatus.EVALUATION_STATUS_COMPLETED],
          language: 'python',
          engine: '',
          executorId: caller.executorId,
          metadata: {},
        },
      });
      expect(filtered.evaluations.map((e) => e.evalId)).to.deep.equal([caller.done]);
      const theirs = await call(query, query.listEvaluations, {
        status: 0,
        pageSize: 100,
        pageToken: '',
        filter: { statuses: [], language: '', engine: '', executorId: other.executorId, metadata: {} },
      });
      expect(theirs.evaluations, "another tenant's executor lists nothing").to.deep.equal([]);

      const counted = await call(query, query.countEvaluations, {});
      expect(counted.count).to.equal('2');
      const queue = await call(query, query.getQueueMetrics, {});
      expect([queue.queued, queue.running]).to.deep.equal(['1', '0']);

      const executors = await call(query, query.listExecutors, {});
      expect(executors.executors.map((e) => e.executorId)).to.deep.equal([caller.executorId]);

      const audit = await call(query, query.listSecurityEvents, {
        evalId: '',
        containerId: '',
        kind: 0,
        pageSize: 0,
        pageToken: '',
        violationTypes: [],
      });
      expect(audit.events.map((e) => e.containerCreated?.image)).to.deep.equal([`${caller.name}:latest`]);
      const guessed = await call(query, query.listSecurityEvents, {
        evalId: other.done,
        containerId: '',
        kind: 0,
        pageSize: 0,
        pageToken: '',
        violationTypes: [],
      });
      expect(guessed.events, "another tenant's eval_id filters to nothing").to.deep.equal([]);
    }
  });

  it("sends the firehose of the caller's tenant only, replayed from the first position", async () => {
    for (const caller of [acme, globex]) {
      const { query } = caller.api;
      const reader = readStream<WatchEvaluationsResponse>(
        query.watchEvaluations({ afterPosition: '0', statuses: [], evalIds: [] }),
      );
      const seen = new Set<string>();
      const tenantsSeen = new Set<string>();
      for (;;) {
        const message = await reader.next();
        if (message.caughtUp !== undefined) break;
        const evaluation = message.update?.evaluation;
        if (evaluation !== undefined) {
          seen.add(evaluation.evalId);
          tenantsSeen.add(evaluation.tenantId);
        }
      }
      reader.cancel();
      expect([...seen].sort()).to.deep.equal([caller.done, caller.waiting].sort());
      expect([...tenantsSeen]).to.deep.equal([caller.name]);
    }
  });

  it("refuses every command on another tenant's evaluation as NOT_FOUND, and writes nothing", async () => {
    const before = await call(acme.api.query, acme.api.query.getEvaluation, { evalId: acme.waiting });
    const exec = globex.executor.command;
    const api = globex.api.command;
    const evalId = acme.waiting;
    const codes = {
      StartEvaluation: await codeOf(
        call(exec, exec.startEvaluation, { evalId, executorId: globex.executorId, containerId: 'c', requestId: '' }),
      ),
      CancelEvaluation: await codeOf(call(api, api.cancelEvaluation, { evalId, reason: 'mine now', requestId: '' })),
      RecordMetrics: await codeOf(
        call(exec, exec.recordMetrics, {
          evalId: acme.done,
          metrics: [{ name: 'loss', value: 1, unit: '', step: '9', timestamp: new Date() }],
          requestId: '',
        }),
      ),
      AppendLogs: await appendLogs(exec, acme.done, 'forged'),
    };
    expect(codes).to.deep.equal({
      StartEvaluation: status.NOT_FOUND,
      CancelEvaluation: status.NOT_FOUND,
      RecordMetrics: status.NOT_FOUND,
      AppendLogs: status.NOT_FOUND,
    });
    const after = await call(acme.api.query, acme.api.query.getEvaluation, { evalId: acme.waiting });
    expect(after.evaluation?.revision).to.equal(before.evaluation?.revision);
  });

  it("keeps ids apart: another tenant's eval_id is taken (ALREADY_EXISTS), a request_id is each tenant's own", async () => {
    const taken = await expectError(
      call(globex.api.command, globex.api.command.submitEvaluation, aSubmission({ evalId: acme.waiting })),
    );
    expect(taken.code).to.equal(status.ALREADY_EXISTS);
    const same = { requestId: 'shared-request-id' };
    const ours = await call(acme.api.command, acme.api.command.submitEvaluation, aSubmission(same));
    const theirs = await call(globex.api.command, globex.api.command.submitEvaluation, aSubmission(same));
    expect(theirs.evalId).to.not.equal(ours.evalId);
    // Each tenant's retry answers with its own evaluation.
    const again = await call(globex.api.command, globex.api.command.submitEvaluation, aSubmission(same));
    expect(again.evalId).to.equal(theirs.evalId);
  });
});
