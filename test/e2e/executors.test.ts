import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import {
  EvaluationStatus,
  ExecutorStatus,
  FailureReason,
  type Evaluation,
} from '../../shared/generated/crucible/storage/v1/evaluation';
import type { WatchEvaluationResponse } from '../../shared/generated/crucible/storage/v1/query_service';
import { call, readStream, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import { startServices, type RunningServices } from '../support/services';

/** Small settings, so that an executor is lost within seconds: TTL 1 s + grace 1 s (sweeps every 0.5 s). */
const SETTINGS = { EXECUTOR_HEALTH_TTL_SECONDS: '1', EXECUTOR_LOST_GRACE_SECONDS: '1' };

describe('e2e: an executor that stops reporting its health loses its running evaluation', function () {
  this.timeout(30_000);
  let services: RunningServices;
  let commandService: RunningService;
  let clients: Clients;

  before(async () => {
    services = await startServices({ overrides: SETTINGS });
    ({ command: commandService, clients } = services);
  });

  after(async () => {
    await services?.close();
  });

  const reportHealth = (executorId: string): Promise<{ ttlSeconds: number }> =>
    call(clients.command, clients.command.reportExecutorHealth, {
      executorId,
      status: ExecutorStatus.EXECUTOR_STATUS_HEALTHY,
      capacity: 1,
      running: 1,
      version: 'e2e',
      metrics: { load: 0.5 },
    });

  /** Submits and starts an evaluation on `executorId`; the position of the start. */
  async function runOn(executorId: string): Promise<{ evalId: string; position: string }> {
    const { command } = clients;
    const { evalId } = await call(command, command.submitEvaluation, {
      evalId: '',
      code: 'while True: pass',
      language: 'python',
      engine: 'docker',
      timeoutSeconds: 3600,
      metadata: {},
      requestId: '',
    });
    const started = await call(command, command.startEvaluation, {
      evalId,
      executorId,
      containerId: '',
      requestId: '',
    });
    return { evalId, position: started.position };
  }

  it('fails it with EXECUTOR_LOST, while an executor that keeps reporting keeps its own', async () => {
    const { query } = clients;
    expect(await reportHealth('executor-gone')).to.deep.equal({ ttlSeconds: 1 });
    expect(await reportHealth('executor-alive')).to.deep.equal({ ttlSeconds: 1 });
    // Started first, so a sweep judges it before the other (the oldest first): had it been failed
    // too, that failure would come before the other's.
    const kept = await runOn('executor-alive');
    const lost = await runOn('executor-gone');

    // executor-alive reports well within its TTL for the whole test; executor-gone never again.
    let reporting = Promise.resolve();
    let reportFailure: unknown;
    const reporter = setInterval(() => {
      reporting = reporting
        .then(() => reportHealth('executor-alive'))
        .then(
          () => undefined,
          (err: unknown) => void (reportFailure ??= err),
        );
    }, 250);
    try {
      await call(query, query.getEvaluation, { evalId: lost.evalId, minPosition: lost.position });
      // The watch ends by itself after the terminal state; its deadline bounds the wait.
      const watch = readStream<WatchEvaluationResponse>(
        query.watchEvaluation({ evalId: lost.evalId }, new Metadata(), { deadline: new Date(Date.now() + 15_000) }),
      );
      let last: Evaluation | undefined;
      let lastPosition = '0';
      for (;;) {
        const message = await watch.next().catch(() => undefined);
        if (message === undefined) break;
        if (message.update?.evaluation !== undefined) {
          last = message.update.evaluation;
          lastPosition = message.update.position;
        }
      }
      expect(await watch.finished, 'the watch ended after the terminal state, not at its deadline').to.equal(undefined);
      expect(last?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_FAILED);
      expect(last?.failureReason).to.equal(FailureReason.FAILURE_REASON_EXECUTOR_LOST);
      expect(last?.errorPreview).to.match(/^executor "executor-gone" stopped reporting its health: last report at /);
      expect(last?.revision).to.equal('3');

      // Read once the read models hold the failure: every sweep up to it left this one running.
      const alive = await call(query, query.getEvaluation, { evalId: kept.evalId, minPosition: lastPosition });
      expect(alive.evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_RUNNING);
    } finally {
      clearInterval(reporter);
      await reporting;
    }
    expect(reportFailure, 'every report of executor-alive was taken').to.equal(undefined);
    expect(commandService.logs()).to.include('evaluation failed by the reaper');
  });
});
