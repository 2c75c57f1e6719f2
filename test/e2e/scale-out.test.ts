import { credentials, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { Client as PgClient } from 'pg';
import { EVENT_TYPE_TO_PROTO } from '../../shared/domain';
import {
  EvaluationCommandServiceClient,
  type SubmitEvaluationRequest,
} from '../../shared/generated/crucible/storage/v1/command_service';
import {
  FailureReason,
  type EventType,
  type EvaluationUpdate,
} from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  EvaluationQueryServiceClient,
  type WatchEvaluationsResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { call, expectError } from '../support/clients';
import { createTestEnvironment, type TestEnvironment } from '../support/environment';
import { startService, waitForServing, type RunningService } from '../support/processes';
import { COMMAND_SERVICE, QUERY_SERVICE } from '../support/services';

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
// Metrics: each process serves its own (COMMAND_METRICS_PORT / QUERY_METRICS_PORT 0: a free
// port, named in its "listening" line), which is what tells the instances apart.

function metricsPortOf(service: RunningService): number {
  for (const line of service.logs().split('\n')) {
    if (!line.includes('"listening"')) continue;
    const port = (JSON.parse(line) as { metricsPort?: number }).metricsPort;
    if (port !== undefined) return port;
  }
  throw new Error(`no metricsPort in the listening line:\n${service.logs()}`);
}

/** Calls of `method` a process answered OK so far (crucible_rpc_duration_seconds_count). */
async function answeredOk(service: RunningService, method: string): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${metricsPortOf(service)}/metrics`);
  expect(response.status).to.equal(200);
  let total = 0;
  for (const line of (await response.text()).split('\n')) {
    if (!line.startsWith('crucible_rpc_duration_seconds_count{')) continue;
    if (!line.includes(`method="${method}"`) || !line.includes('code="OK"')) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// The event log in PostgreSQL, the reference.

interface LoggedEvent {
  readonly position: bigint;
  readonly evalId: string;
  readonly revision: bigint;
  readonly eventType: string;
  readonly requestId: string | null;
}

/** Every event, in position order (the table's column: the text alias would sort "10" before "2"). */
async function readEventLog(databaseUrl: string): Promise<LoggedEvent[]> {
  const client = new PgClient({ connectionString: databaseUrl, application_name: 'crucible-scale-out-test' });
  await client.connect();
  try {
    const { rows } = await client.query<{
      position: string;
      eval_id: string;
      revision: string;
      event_type: string;
      request_id: string | null;
    }>(
      `SELECT position::text AS position, eval_id, revision::text AS revision, event_type, request_id
         FROM evaluation_events ORDER BY evaluation_events.position`,
    );
    return rows.map((r) => ({
      position: BigInt(r.position),
      evalId: r.eval_id,
      revision: BigInt(r.revision),
      eventType: r.event_type,
      requestId: r.request_id,
    }));
  } finally {
    await client.end();
  }
}

/** Positions are exactly 1..N: no gap, no duplicate (the rows are ordered by position). */
function expectDense(log: readonly LoggedEvent[]): void {
  const wrong = log.findIndex((e, i) => e.position !== BigInt(i + 1));
  expect(wrong, `position at index ${wrong}: ${log[wrong]?.position} (expected ${wrong + 1})`).to.equal(-1);
}

function logEventType(eventType: EventType): string {
  return Object.entries(EVENT_TYPE_TO_PROTO).find(([, wire]) => wire === eventType)?.[0] ?? `unknown ${eventType}`;
}

const describeLogged = (e: LoggedEvent): string => `${e.position} ${e.evalId}@${e.revision} ${e.eventType}`;
const describeUpdate = (u: EvaluationUpdate): string =>
  `${u.position} ${u.evaluation?.evalId ?? '?'}@${u.revision} ${logEventType(u.eventType)}`;

/** What a watcher got equals the log after `after`, one for one, in order. */
function expectSameAsLog(
  updates: readonly EvaluationUpdate[],
  log: readonly LoggedEvent[],
  after: bigint,
  what: string,
) {
  const expected = log.filter((e) => e.position > after).map(describeLogged);
  const actual = updates.map(describeUpdate);
  const at = actual.findIndex((a, i) => a !== expected[i]);
  if (actual.length === expected.length && at === -1) return;
  const i = at === -1 ? Math.min(actual.length, expected.length) : at;
  throw new Error(
    `${what}: ${actual.length} updates vs ${expected.length} events in the log after ${after}; first difference at ` +
      `index ${i}: got ${actual.slice(Math.max(0, i - 2), i + 3).join(', ') || '(none)'}, ` +
      `expected ${expected.slice(Math.max(0, i - 2), i + 3).join(', ') || '(none)'}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Commands: each evaluation's life is a plan of commands, each with a request id of its own, so
// that a retry (after UNAVAILABLE: an instance died under the call) is safe.

type Step = 'submit' | 'start' | 'complete' | 'fail' | 'cancel';

const LOGGED: Record<Step, string> = {
  submit: 'EvaluationQueued',
  start: 'EvaluationStarted',
  complete: 'EvaluationCompleted',
  fail: 'EvaluationFailed',
  cancel: 'EvaluationCancelled',
};

const SHAPES: readonly (readonly Step[])[] = [
  ['submit', 'start', 'complete'],
  ['submit', 'start', 'fail'],
  ['submit', 'cancel'],
];

interface Plan {
  readonly evalId: string;
  readonly steps: readonly Step[];
}

function plansFor(prefix: string, evaluations: number): Plan[] {
  return Array.from({ length: evaluations }, (_, i) => ({
    evalId: `${prefix}-${i}`,
    steps: SHAPES[i % SHAPES.length] ?? [],
  }));
}

const submission = (evalId: string, requestId: string, code = `print(${JSON.stringify(evalId)})`) =>
  ({
    evalId,
    code,
    language: 'python',
    engine: 'docker',
    timeoutSeconds: 60,
    metadata: { suite: 'scale-out' },
    requestId,
  }) satisfies SubmitEvaluationRequest;

interface Answer {
  readonly evalId: string;
  readonly revision: string;
  readonly position: string;
}

function send(command: EvaluationCommandServiceClient, evalId: string, step: Step, requestId: string): Promise<Answer> {
  switch (step) {
    case 'submit':
      return call(command, command.submitEvaluation, submission(evalId, requestId));
    case 'start':
      return call(command, command.startEvaluation, {
        evalId,
        executorId: 'executor-1',
        containerId: `c-${evalId}`,
        requestId,
      });
    case 'complete':
      return call(command, command.completeEvaluation, {
        evalId,
        output: Buffer.from(`${evalId} done\n`),
        exitCode: 0,
        requestId,
      });
    case 'fail':
      return call(command, command.failEvaluation, {
        evalId,
        error: `${evalId} broke`,
        exitCode: 3,
        reason: FailureReason.FAILURE_REASON_ERROR,
        requestId,
      });
    case 'cancel':
      return call(command, command.cancelEvaluation, { evalId, reason: 'scale-out test', requestId });
  }
}

interface Ack {
  readonly evalId: string;
  readonly step: Step;
  readonly revision: bigint;
  readonly position: bigint;
  /** When the command was first sent, and when its answer arrived (performance.now()). */
  readonly sentAt: number;
  readonly ackedAt: number;
}

interface Burst {
  readonly acks: readonly Ack[];
  readonly failures: readonly string[];
  /** Commands sent again after UNAVAILABLE (with their request id). */
  readonly retries: number;
  whenAcked(count: number): Promise<void>;
  readonly done: Promise<void>;
}

/**
 * Runs the plans, `concurrency` at a time, each plan's steps in order. `retry`: a command that
 * fails UNAVAILABLE is sent again with the same request id (up to 10 times); any other failure
 * is recorded and ends its plan.
 */
function startBurst(
  command: EvaluationCommandServiceClient,
  plans: readonly Plan[],
  options: { concurrency: number; retry: boolean },
): Burst {
  const acks: Ack[] = [];
  const failures: string[] = [];
  let retries = 0;
  const waiters: { count: number; resolve: () => void }[] = [];
  const notify = (): void => {
    for (const waiter of [...waiters]) {
      if (acks.length < waiter.count) continue;
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
  };
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let plan = plans[next++]; plan !== undefined; plan = plans[next++]) {
      for (const step of plan.steps) {
        const requestId = `${plan.evalId}:${step}`;
        const sentAt = performance.now();
        let answer: Answer | undefined;
        for (let attempt = 1; answer === undefined; attempt += 1) {
          try {
            answer = await send(command, plan.evalId, step, requestId);
          } catch (err) {
            const e = err as ServiceError;
            if (!options.retry || e.code !== status.UNAVAILABLE || attempt >= 10) {
              failures.push(`${step} ${plan.evalId} (attempt ${attempt}): ${status[e.code] ?? e.code} ${e.details}`);
              break;
            }
            retries += 1;
          }
        }
        if (answer === undefined) break;
        acks.push({
          evalId: answer.evalId,
          step,
          revision: BigInt(answer.revision),
          position: BigInt(answer.position),
          sentAt,
          ackedAt: performance.now(),
        });
        notify();
      }
    }
  };
  const done = Promise.all(Array.from({ length: options.concurrency }, () => worker())).then(() => {
    for (const waiter of waiters.splice(0)) waiter.resolve();
  });
  return {
    acks,
    failures,
    get retries() {
      return retries;
    },
    whenAcked(count) {
      if (acks.length >= count) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ count, resolve }));
    },
    done,
  };
}

/**
 * What a burst left in the log: one event per acknowledged command, at the position and
 * revision its answer named (no command lost, none written twice, whichever instance took
 * it); each evaluation's events in lifecycle order; and positions in commit order: a command
 * sent after another was answered has a higher position.
 */
function expectBurstInLog(burst: Burst, plans: readonly Plan[], log: readonly LoggedEvent[]): void {
  expect(burst.failures, burst.failures.slice(0, 10).join('\n')).to.deep.equal([]);
  const commands = plans.reduce((n, p) => n + p.steps.length, 0);
  expect(burst.acks.length, 'acknowledged commands').to.equal(commands);

  const byPosition = new Map(log.map((e) => [e.position, e]));
  for (const ack of burst.acks) {
    const logged = byPosition.get(ack.position);
    expect(logged && describeLogged(logged), `the event ${ack.step} of ${ack.evalId} was answered with`).to.equal(
      `${ack.position} ${ack.evalId}@${ack.revision} ${LOGGED[ack.step]}`,
    );
  }

  const planned = new Set(plans.map((p) => p.evalId));
  const events = new Map<string, LoggedEvent[]>();
  for (const e of log) if (planned.has(e.evalId)) events.set(e.evalId, [...(events.get(e.evalId) ?? []), e]);
  expect([...events.values()].flat().length, "the burst's events in the log").to.equal(commands);
  for (const plan of plans) {
    expect(
      (events.get(plan.evalId) ?? []).map((e) => `${e.revision} ${e.eventType}`),
      `${plan.evalId}: its events in position order`,
    ).to.deep.equal(plan.steps.map((step, i) => `${i + 1} ${LOGGED[step]}`));
  }

  // For each command, every command answered before it was first sent has a lower position.
  const byAck = [...burst.acks].sort((a, b) => a.ackedAt - b.ackedAt);
  const highestBefore: bigint[] = [];
  for (const [i, ack] of byAck.entries())
    highestBefore[i] = ack.position > (highestBefore[i - 1] ?? 0n) ? ack.position : (highestBefore[i - 1] ?? 0n);
  for (const ack of burst.acks) {
    let lo = 0;
    let hi = byAck.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((byAck[mid]?.ackedAt ?? Infinity) < ack.sentAt) lo = mid + 1;
      else hi = mid;
    }
    const highest = lo === 0 ? 0n : (highestBefore[lo - 1] ?? 0n);
    expect(
      highest < ack.position,
      `${ack.step} of ${ack.evalId} at ${ack.position}, sent after position ${highest} was answered`,
    ).to.equal(true);
  }
}

// ---------------------------------------------------------------------------------------------
// Watchers of every change (WatchEvaluations) that record what they get.

const openStreams = new Set<ClientReadableStream<unknown>>();

interface Firehose {
  readonly updates: EvaluationUpdate[];
  /** The highest position an update, progress or caught-up message carried: where to resume. */
  readonly reached: bigint;
  readonly caughtUpAt: bigint | undefined;
  /** Resolves with how the stream ended (never rejects). */
  readonly finished: Promise<ServiceError | 'ok'>;
  whenReached(position: bigint, timeoutMs?: number): Promise<void>;
  whenCaughtUp(timeoutMs?: number): Promise<void>;
  cancel(): void;
}

function watchAll(query: EvaluationQueryServiceClient, afterPosition?: bigint): Firehose {
  const stream = query.watchEvaluations({
    statuses: [],
    evalIds: [],
    ...(afterPosition !== undefined ? { afterPosition: afterPosition.toString() } : {}),
  });
  openStreams.add(stream);
  const updates: EvaluationUpdate[] = [];
  let reached = afterPosition ?? 0n;
  let caughtUpAt: bigint | undefined;
  let ended: ServiceError | 'ok' | undefined;
  const waiters: { ready: () => boolean; resolve: () => void; reject: (err: Error) => void }[] = [];
  const notify = (): void => {
    for (const waiter of [...waiters]) {
      if (!waiter.ready()) continue;
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
  };
  const see = (position: string): void => {
    if (BigInt(position) > reached) reached = BigInt(position);
  };
  stream.on('data', (message: WatchEvaluationsResponse) => {
    if (message.update !== undefined) {
      updates.push(message.update);
      see(message.update.position);
    } else if (message.progress !== undefined) {
      see(message.progress.position);
    } else if (message.caughtUp !== undefined) {
      caughtUpAt ??= BigInt(message.caughtUp.position);
      see(message.caughtUp.position);
    }
    notify();
  });
  const finished = new Promise<ServiceError | 'ok'>((resolve) => {
    const end = (result: ServiceError | 'ok'): void => {
      if (ended !== undefined) return;
      ended = result;
      openStreams.delete(stream);
      notify();
      const how = result === 'ok' ? 'OK' : `${status[result.code]}: ${result.details}`;
      for (const waiter of waiters.splice(0)) waiter.reject(new Error(`the stream ended (${how}) first`));
      resolve(result);
    };
    stream.on('error', (err: ServiceError) => end(err));
    // 'end' can come before the status; an error, if any, arrives as 'error' first.
    stream.on('end', () => setImmediate(() => end('ok')));
  });
  const waitFor = (what: string, ready: () => boolean, timeoutMs: number): Promise<void> => {
    if (ready()) return Promise.resolve();
    if (ended !== undefined) return Promise.reject(new Error(`the stream ended before ${what}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(waiter), 1);
        reject(new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what} (reached ${reached})`));
      }, timeoutMs);
      const waiter = {
        ready,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      waiters.push(waiter);
    });
  };
  return {
    updates,
    get reached() {
      return reached;
    },
    get caughtUpAt() {
      return caughtUpAt;
    },
    finished,
    whenReached: (position, timeoutMs = 20_000) =>
      waitFor(`position ${position}`, () => reached >= position, timeoutMs),
    whenCaughtUp: (timeoutMs = 20_000) => waitFor('the caught-up marker', () => caughtUpAt !== undefined, timeoutMs),
    cancel: () => stream.cancel(),
  };
}

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
    for (const stream of [...openStreams]) stream.cancel();
    openStreams.clear();
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

    const plans = plansFor('spread', 120);
    const burst = startBurst(command, plans, { concurrency: 24, retry: false });
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
    expectDense(log);
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
    const watchers = queryDirect.map((replica) => ({ replay: watchAll(replica, 0n), live: watchAll(replica) }));
    for (const w of watchers) await Promise.all([w.replay.whenCaughtUp(), w.live.whenCaughtUp()]);

    const plans = plansFor('watched', 60);
    const burst = startBurst(command, plans, { concurrency: 16, retry: false });
    await burst.done;
    const log = await readEventLog(databaseUrl);
    expectDense(log);
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
    const plans = plansFor('crash', 100);
    const burst = startBurst(command, plans, { concurrency: 16, retry: true });
    await burst.whenAcked(90);
    await victim.kill9();
    await burst.done;
    expect(burst.retries, 'commands in flight on the killed instance, sent again').to.be.greaterThan(0);

    const log = await readEventLog(environment.config.databaseUrl);
    expectDense(log);
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

    const watchers = queryDirect.map((replica) => watchAll(replica, from));
    await Promise.all(watchers.map((w) => w.whenCaughtUp()));
    const killed = watchers[victim];
    if (killed === undefined) throw new Error('set-up failed');

    const plans = plansFor('replica-crash', 60);
    const burst = startBurst(command, plans, { concurrency: 16, retry: true });
    // Killed once its watcher has seen part of the burst, and the rest is still to come.
    await killed.whenReached(from + 40n);
    await victimService.kill9();
    const ended = await killed.finished;
    expect(ended === 'ok' ? 'OK' : status[ended.code], "the killed replica's watcher").to.equal('UNAVAILABLE');

    // The client resumes from the last position it saw, through the round-robin client (the
    // killed replica refuses; it resumes again, as on any UNAVAILABLE).
    const received = [...killed.updates];
    let resumed = watchAll(query, killed.reached);
    for (let resumes = 1; ; resumes += 1) {
      const outcome = await Promise.race([resumed.whenCaughtUp().then(() => 'caught up' as const), resumed.finished]);
      if (outcome === 'caught up') break;
      expect(outcome === 'ok' ? 'OK' : status[outcome.code], 'a resumed watch refused').to.equal('UNAVAILABLE');
      expect(resumes, 'resumes').to.be.lessThan(10);
      received.push(...resumed.updates);
      resumed = watchAll(query, resumed.reached);
    }

    await burst.done;
    const log = await readEventLog(databaseUrl);
    expectDense(log);
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
