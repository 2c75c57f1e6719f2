import { credentials, status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { expectBurstInLog, startAckedBurst } from '../support/bursts';
import { call, expectError } from '../support/clients';
import { plansFor, type Step } from '../support/commands';
import { createTestEnvironment, type TestEnvironment } from '../support/environment';
import { describeLogged, expectDense, expectSameAsLog, logEventType, readEventLog } from '../support/event-log';
import { metricsPortOf, scrape, totalOf } from '../support/metrics-scrape';
import { startService, waitForServing, type RunningService } from '../support/processes';
import { aSubmission } from '../support/requests';
import { COMMAND_SERVICE, QUERY_SERVICE } from '../support/services';
import { cancelOpenStreams, recordFirehose } from '../support/watchers';

/**
 * Issue 16, "many instances of each service": two command instances and three query replicas
 * on one environment (one database, one Redis key prefix, one bucket), reached by clients that
 * list every instance's address and balance round robin over them, as a client behind one
 * address would be.
 */

const CLIENT_OPTIONS = {
  'grpc.max_send_message_length': 64 * 1024 * 1024,
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
};

/** A grpc-js target over several addresses (the `ipv4:` resolver) and the channel options for round robin. */
function roundRobin(services: readonly RunningService[]): { target: string; options: Record<string, unknown> } {
  return {
    target: `ipv4:${services.map((s) => s.address).join(',')}`,
    options: {
      ...CLIENT_OPTIONS,
      'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Metrics: each instance serves its own, which is what tells the instances apart.

/** Calls of `method` a process answered OK so far (crucible_rpc_duration_seconds_count). */
async function answeredOk(service: RunningService, method: string): Promise<number> {
  const { samples } = await scrape(metricsPortOf(service));
  return totalOf(samples, 'crucible_rpc_duration_seconds_count', { method, code: 'OK' });
}

// ---------------------------------------------------------------------------------------------
// Commands: each evaluation's life is a plan of commands, each with a request id of its own, so
// that a retry (after UNAVAILABLE: an instance died under the call) is safe.

/**
 * Lives that only move the status (no metrics, no security event): 8 commands every 3
 * evaluations, so a burst of 320 commands is 120 evaluations.
 */
const SHORT_LIVES: readonly (readonly Step[])[] = [
  ['submit', 'start', 'complete'],
  ['submit', 'start', 'fail'],
  ['submit', 'cancel'],
];

const SUITE = { suite: 'scale-out' };

const submission = (evalId: string, requestId: string, code = `print(${JSON.stringify(evalId)})`) =>
  aSubmission({ evalId, code, metadata: SUITE, requestId });

/** A command that fails UNAVAILABLE (its instance died under it) is sent again, with its request id. */
const RETRY_UNAVAILABLE = { on: [status.UNAVAILABLE], attempts: 10 };

// ---------------------------------------------------------------------------------------------

describe('e2e: many instances of each service (two command instances, three query replicas, one environment)', function () {
  this.timeout(60_000);
  let environment: TestEnvironment | undefined;
  const commandServices: RunningService[] = [];
  const queryServices: RunningService[] = [];
  /** One client per instance, to reach it directly. */
  const commandDirect: EvaluationCommandServiceClient[] = [];
  const queryDirect: EvaluationQueryServiceClient[] = [];
  /** The clients behind "one address": round robin over every instance. */
  let command: EvaluationCommandServiceClient;
  let query: EvaluationQueryServiceClient;

  before(async () => {
    environment = await createTestEnvironment({ overrides: { COMMAND_METRICS_PORT: '0', QUERY_METRICS_PORT: '0' } });
    const env = environment.env;
    // All five at once; every one that started is kept for `after`, also when another did not.
    const started = await Promise.allSettled([
      ...[0, 1].map(async () => {
        const service = await startService('command', env);
        commandServices.push(service);
        await waitForServing(service.address, COMMAND_SERVICE);
      }),
      ...[0, 1, 2].map(async () => {
        const service = await startService('query', env);
        queryServices.push(service);
        await waitForServing(service.address, QUERY_SERVICE);
      }),
    ]);
    for (const result of started) if (result.status === 'rejected') throw result.reason;
    for (const s of commandServices)
      commandDirect.push(new EvaluationCommandServiceClient(s.address, credentials.createInsecure(), CLIENT_OPTIONS));
    for (const s of queryServices)
      queryDirect.push(new EvaluationQueryServiceClient(s.address, credentials.createInsecure(), CLIENT_OPTIONS));
    const commands = roundRobin(commandServices);
    command = new EvaluationCommandServiceClient(commands.target, credentials.createInsecure(), commands.options);
    const queries = roundRobin(queryServices);
    query = new EvaluationQueryServiceClient(queries.target, credentials.createInsecure(), queries.options);
  });

  after(async () => {
    cancelOpenStreams();
    for (const client of [command, query, ...commandDirect, ...queryDirect]) client?.close();
    const stopped = await Promise.allSettled([...queryServices, ...commandServices].map((s) => s.stop()));
    await environment?.close();
    for (const result of stopped) if (result.status === 'rejected') throw result.reason;
  });

  it('commands spread over both command instances get dense positions in commit order, each life in order', async () => {
    if (environment === undefined) throw new Error('set-up failed');
    const methods = ['SubmitEvaluation', 'StartEvaluation', 'CompleteEvaluation', 'FailEvaluation', 'CancelEvaluation'];
    const served = async (service: RunningService): Promise<number> =>
      (await Promise.all(methods.map((m) => answeredOk(service, m)))).reduce((a, b) => a + b, 0);
    const servedBefore = await Promise.all(commandServices.map(served));

    const plans = plansFor('spread', 320, SHORT_LIVES);
    const burst = startAckedBurst(command, plans, { concurrency: 24, metadata: SUITE });
    await burst.done;
    const servedAfter = await Promise.all(commandServices.map(served));
    const byInstance = servedAfter.map((n, i) => n - (servedBefore[i] ?? 0));
    for (const [i, n] of byInstance.entries())
      expect(n, `commands command instance ${i} answered`).to.be.greaterThan(0);
    expect(
      byInstance.reduce((a, b) => a + b, 0),
      'every command answered by exactly one instance',
    ).to.equal(burst.acks.length);

    const log = await readEventLog(environment.config.databaseUrl);
    expectBurstInLog(burst, plans, log);

    // Through the round-robin query client: every replica answers some, each the log's events.
    const readsBefore = await Promise.all(queryServices.map((s) => answeredOk(s, 'GetEvaluationEvents')));
    let nextPlan = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let plan = plans[nextPlan++]; plan !== undefined; plan = plans[nextPlan++]) {
          const { events } = await call(query, query.getEvaluationEvents, {
            evalId: plan.evalId,
            afterRevision: '0',
            pageSize: 100,
            pageToken: '',
          });
          expect(
            events.map((e) => `${e.position} ${plan.evalId}@${e.revision} ${logEventType(e.eventType)}`),
          ).to.deep.equal(log.filter((e) => e.evalId === plan.evalId).map(describeLogged));
        }
      }),
    );
    const readsAfter = await Promise.all(queryServices.map((s) => answeredOk(s, 'GetEvaluationEvents')));
    const reads = readsAfter.map((n, i) => n - (readsBefore[i] ?? 0));
    for (const [i, n] of reads.entries()) expect(n, `reads query replica ${i} answered`).to.be.greaterThan(0);
    expect(reads.reduce((a, b) => a + b, 0)).to.equal(plans.length);
  });

  it('a retry on the other command instance gets the same answer and writes nothing; another body is refused there too', async () => {
    if (environment === undefined) throw new Error('set-up failed');
    const [a, b] = commandDirect;
    if (a === undefined || b === undefined) throw new Error('set-up failed');
    const databaseUrl = environment.config.databaseUrl;

    const requestId = 'idem-across:submit';
    const first = await call(a, a.submitEvaluation, submission('idem-across', requestId));
    const retried = await call(b, b.submitEvaluation, submission('idem-across', requestId));
    expect(retried).to.deep.equal(first);
    const started = await call(b, b.startEvaluation, {
      evalId: 'idem-across',
      executorId: 'executor-1',
      containerId: '',
      requestId: 'idem-across:start',
    });
    expect(
      await call(a, a.startEvaluation, {
        evalId: 'idem-across',
        executorId: 'executor-1',
        containerId: '',
        requestId: 'idem-across:start',
      }),
    ).to.deep.equal(started);

    // Duplicates racing on both instances at once: one event, one answer.
    const racing = await Promise.all(
      Array.from({ length: 16 }, (_, i) => {
        const client = i % 2 === 0 ? a : b;
        return call(client, client.submitEvaluation, submission('idem-race', 'idem-race:submit'));
      }),
    );
    expect(new Set(racing.map((r) => `${r.evalId}@${r.revision} ${r.position}`)).size, 'distinct answers').to.equal(1);

    const log = await readEventLog(databaseUrl);
    expectDense(log);
    for (const [evalId, answers] of [
      ['idem-across', [first, started]],
      ['idem-race', [racing[0]]],
    ] as const) {
      expect(
        log.filter((e) => e.evalId === evalId).map(describeLogged),
        `${evalId}: one event per command`,
      ).to.deep.equal(
        answers.map(
          (r, i) => `${r?.position} ${evalId}@${r?.revision} ${i === 0 ? 'EvaluationQueued' : 'EvaluationStarted'}`,
        ),
      );
    }
    expect(log.filter((e) => e.requestId === requestId).map((e) => e.position)).to.deep.equal([BigInt(first.position)]);

    // The request id with another body: refused on B as on A, which recorded it, and nothing written.
    const other = submission('idem-across', requestId, 'print("something else")');
    const onA = await expectError(call(a, a.submitEvaluation, other));
    const onB = await expectError(call(b, b.submitEvaluation, other));
    expect(onA.code).to.equal(status.ALREADY_EXISTS);
    expect(onA.details).to.contain(requestId);
    expect({ code: onB.code, details: onB.details }).to.deep.equal({ code: onA.code, details: onA.details });
    const elsewhere = await expectError(call(b, b.submitEvaluation, submission('idem-elsewhere', requestId)));
    expect({ code: elsewhere.code, details: elsewhere.details }).to.deep.equal({
      code: onA.code,
      details: onA.details,
    });
    const after = await readEventLog(databaseUrl);
    expect(after.map(describeLogged), 'nothing written by the refusals').to.deep.equal(log.map(describeLogged));
  });

  it("every replica's watchers see every change once, in position order", async () => {
    if (environment === undefined) throw new Error('set-up failed');
    const databaseUrl = environment.config.databaseUrl;
    const before = await readEventLog(databaseUrl);
    const headBefore = before[before.length - 1]?.position ?? 0n;

    // On each replica: one that replays the whole log first, one of live changes only.
    const watchers = queryDirect.map((replica) => ({
      replay: recordFirehose(replica, { afterPosition: '0' }),
      live: recordFirehose(replica, {}),
    }));
    for (const w of watchers) await Promise.all([w.replay.whenCaughtUp(), w.live.whenCaughtUp()]);

    const plans = plansFor('watched', 160, SHORT_LIVES);
    const burst = startAckedBurst(command, plans, { concurrency: 16, metadata: SUITE });
    await burst.done;
    const log = await readEventLog(databaseUrl);
    expectBurstInLog(burst, plans, log);
    const head = log[log.length - 1]?.position ?? 0n;

    for (const [r, w] of watchers.entries()) {
      await Promise.all([w.replay.whenReached(head), w.live.whenReached(head)]);
      expectSameAsLog(w.replay.updates, log, 0n, `replica ${r}: watcher from position 0`);
      const liveFrom = w.live.caughtUpAt ?? 0n;
      expect(
        liveFrom <= headBefore,
        `replica ${r}: the live watcher started at ${liveFrom}, before the burst`,
      ).to.equal(true);
      expectSameAsLog(w.live.updates, log, liveFrom, `replica ${r}: live watcher (from ${liveFrom})`);
      w.replay.cancel();
      w.live.cancel();
    }
  });

  it('kill -9 of a command instance during a burst loses no acknowledged command, and positions stay dense', async () => {
    if (environment === undefined) throw new Error('set-up failed');
    const victim = commandServices[0];
    if (victim === undefined) throw new Error('set-up failed');
    // 100 evaluations.
    const plans = plansFor('crash', 267, SHORT_LIVES);
    const burst = startAckedBurst(command, plans, { concurrency: 16, retry: RETRY_UNAVAILABLE, metadata: SUITE });
    await burst.whenAcked(90);
    await victim.kill9();
    await burst.done;
    expect(burst.retries.UNAVAILABLE ?? 0, 'commands in flight on the killed instance, sent again').to.be.greaterThan(
      0,
    );

    const log = await readEventLog(environment.config.databaseUrl);
    expectBurstInLog(burst, plans, log);
  });

  it('kill -9 of a query replica: watchers elsewhere see every change once, and its watcher resumes on another', async () => {
    if (environment === undefined) throw new Error('set-up failed');
    const databaseUrl = environment.config.databaseUrl;
    const victim = 1;
    const victimService = queryServices[victim];
    if (victimService === undefined) throw new Error('set-up failed');
    const start = await readEventLog(databaseUrl);
    const from = start[start.length - 1]?.position ?? 0n;

    const watchers = queryDirect.map((replica) => recordFirehose(replica, { afterPosition: from.toString() }));
    await Promise.all(watchers.map((w) => w.whenCaughtUp()));
    const killed = watchers[victim];
    if (killed === undefined) throw new Error('set-up failed');

    const plans = plansFor('replica-crash', 160, SHORT_LIVES);
    const burst = startAckedBurst(command, plans, { concurrency: 16, retry: RETRY_UNAVAILABLE, metadata: SUITE });
    // Killed once its watcher has seen part of the burst, and the rest is still to come.
    await killed.whenReached(from + 40n);
    await victimService.kill9();
    const ended = await killed.finished;
    expect(ended === 'ok' ? 'OK' : status[ended.code], "the killed replica's watcher").to.equal('UNAVAILABLE');

    // The client resumes from the last position it saw, through the round-robin client (the
    // killed replica refuses; it resumes again, as on any UNAVAILABLE).
    const received = [...killed.updates];
    let resumed = recordFirehose(query, { afterPosition: killed.reached.toString() });
    for (let resumes = 1; ; resumes += 1) {
      const outcome = await Promise.race([resumed.whenCaughtUp().then(() => 'caught up' as const), resumed.finished]);
      if (outcome === 'caught up') break;
      expect(outcome === 'ok' ? 'OK' : status[outcome.code], 'a resumed watch refused').to.equal('UNAVAILABLE');
      expect(resumes, 'resumes').to.be.lessThan(10);
      received.push(...resumed.updates);
      resumed = recordFirehose(query, { afterPosition: resumed.reached.toString() });
    }

    await burst.done;
    const log = await readEventLog(databaseUrl);
    expectBurstInLog(burst, plans, log);
    const head = log[log.length - 1]?.position ?? 0n;

    await resumed.whenReached(head);
    expectSameAsLog([...received, ...resumed.updates], log, from, 'the watcher of the killed replica, resumed');
    for (const [r, w] of watchers.entries()) {
      if (r === victim) continue;
      await w.whenReached(head);
      expectSameAsLog(w.updates, log, from, `replica ${r}: watcher`);
    }
  });
});
