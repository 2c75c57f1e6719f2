import { join } from 'node:path';
import { EvaluationStatus } from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  EvaluationFilter,
  EvaluationQueryServiceClient,
  type ListEvaluationsRequest,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { rawRebuild } from '../floors/rebuild-raw';
import {
  CREATED_FROM,
  generatedEvaluation,
  generatedIndex,
  generateEventLog,
  type GeneratedEvaluation,
} from '../support/event-log';
import { createClients, SETUP_DEADLINE_MS, unary } from '../support/grpc';
import { closedLoop, interleave, type LoadResult, type LoadTarget } from '../support/load';
import { runToCompletion } from '../support/processes';
import { figure, loadFigures, type Check, type Measured, type Row } from '../support/report';
import type { BenchContext, Scenario } from '../support/scenario';
import { createPool } from '../../shared/postgres';
import { createBenchStack, deleteKeys, PROJECT_ROOT } from '../support/stack';

const { EVALUATION_STATUS_RUNNING: RUNNING, EVALUATION_STATUS_COMPLETED: COMPLETED } = EvaluationStatus;

/** The page a list UI asks for (and ListEvaluations' default). */
const PAGE_SIZE = 50;

/** A filter the bench reads with, and the model of what it selects from the generated data. */
interface Query {
  readonly name: string;
  readonly filter: EvaluationFilter | undefined;
  readonly selects: (evaluation: GeneratedEvaluation) => boolean;
}

interface Queries {
  readonly unfiltered: Query;
  /** The filtered lists the issue names; the first is also what CountEvaluations counts. */
  readonly filtered: readonly [Query, Query];
}

/** The lists of the targets, on a data set of `evaluations` (smaller in a smoke run). */
function queries(evaluations: number): Queries {
  // Minutes 2 to 3 of the 8⅓ the full data set spans: a window in the middle, not at the newest end.
  const after = new Date(CREATED_FROM.getTime() + Math.round(evaluations * 0.24));
  const before = new Date(CREATED_FROM.getTime() + Math.round(evaluations * 0.36));
  return {
    unfiltered: { name: 'unfiltered', filter: undefined, selects: () => true },
    filtered: [
      {
        name: 'status + language',
        filter: EvaluationFilter.fromPartial({ statuses: [RUNNING], language: 'go' }),
        selects: (e) => e.status === RUNNING && e.language === 'go',
      },
      {
        name: 'status + created range',
        filter: EvaluationFilter.fromPartial({ statuses: [COMPLETED], createdAfter: after, createdBefore: before }),
        selects: (e) => e.status === COMPLETED && e.createdAt >= after && e.createdAt < before,
      },
    ],
  };
}

/** A first page (no token), newest first, full view: what a list screen asks for. */
function firstPage(filter: EvaluationFilter | undefined): ListEvaluationsRequest {
  return { status: EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED, pageSize: PAGE_SIZE, pageToken: '', filter };
}

/** The generated evaluations a first page must hold (newest first: the highest i), and whether more follow. */
function expectedFirstPage(evaluations: number, query: Query): { indexes: number[]; more: boolean } {
  const indexes: number[] = [];
  for (let i = evaluations; i >= 1; i--) {
    if (!query.selects(generatedEvaluation(i))) continue;
    if (indexes.length === PAGE_SIZE) return { indexes, more: true };
    indexes.push(i);
  }
  return { indexes, more: false };
}

function expectedCount(evaluations: number, query: Query): number {
  let count = 0;
  for (let i = 1; i <= evaluations; i++) if (query.selects(generatedEvaluation(i))) count++;
  return count;
}

const span = (ids: readonly string[]): string =>
  ids.length === 0 ? 'nothing' : `${ids.length} evaluations (${ids[0]} … ${ids[ids.length - 1]})`;

/** Throws unless the first page is the one the generator implies, record by record. */
async function verifyPage(client: EvaluationQueryServiceClient, evaluations: number, query: Query): Promise<void> {
  const expected = expectedFirstPage(evaluations, query);
  const page = await unary(client, client.listEvaluations, firstPage(query.filter), SETUP_DEADLINE_MS);
  const ids = page.evaluations.map((e) => e.evalId);
  const expectedIds = expected.indexes.map((i) => generatedEvaluation(i).evalId);
  if (ids.join() !== expectedIds.join())
    throw new Error(`ListEvaluations ${query.name}: the first page lists ${span(ids)}, not ${span(expectedIds)}`);
  for (const evaluation of page.evaluations) {
    const model = generatedEvaluation(generatedIndex(evaluation.evalId)!);
    if (
      evaluation.status !== model.status ||
      evaluation.language !== model.language ||
      evaluation.createdAt?.getTime() !== model.createdAt.getTime()
    )
      throw new Error(`ListEvaluations ${query.name}: ${evaluation.evalId} is not as generated`);
  }
  if ((page.nextPageToken !== '') !== expected.more)
    throw new Error(
      `ListEvaluations ${query.name}: next_page_token "${page.nextPageToken}" though more: ${expected.more}`,
    );
}

async function verifyCount(client: EvaluationQueryServiceClient, evaluations: number, query: Query): Promise<number> {
  const expected = expectedCount(evaluations, query);
  const { count, exact } = await unary(client, client.countEvaluations, { filter: query.filter }, SETUP_DEADLINE_MS);
  if (count !== String(expected) || !exact)
    throw new Error(`CountEvaluations ${query.name}: ${count}${exact ? '' : ' (not exact)'}, not exactly ${expected}`);
  return expected;
}

const listName = (query: Query): string => `ListEvaluations ${query.name}`;
const countName = (query: Query): string => `CountEvaluations ${query.name}`;

/** Closed loops at c=1 of each list's first page and of the count, in alternating rounds. */
async function measureReads(
  ctx: BenchContext,
  client: EvaluationQueryServiceClient,
  { unfiltered, filtered }: Queries,
): Promise<Map<string, LoadResult>> {
  const target = (name: string, op: () => Promise<unknown>): LoadTarget => ({
    name,
    run: () => closedLoop({ concurrency: 1, warmupMs: ctx.load.warmupMs, durationMs: ctx.load.durationMs, op }),
  });
  const list = (query: Query): LoadTarget => {
    const request = firstPage(query.filter);
    return target(listName(query), () => unary(client, client.listEvaluations, request));
  };
  const counted = { filter: filtered[0].filter };
  return interleave(
    [
      list(unfiltered),
      ...filtered.map(list),
      target(countName(filtered[0]), () => unary(client, client.countEvaluations, counted)),
    ],
    ctx.load.rounds,
    (name, round) => ctx.progress(`rebuild: c=1 round ${round + 1}/${ctx.load.rounds}: ${name}`),
  );
}

const ms = (value: number): string => `${value.toFixed(2)} ms`;

function readRows(events: string, { unfiltered, filtered }: Queries, results: Map<string, LoadResult>): Row[] {
  const floor = results.get(listName(unfiltered))!;
  const rows: Row[] = filtered.map((query) => {
    const result = results.get(listName(query))!;
    return {
      scenario: `ListEvaluations on ${events} events`,
      case: `${query.name}, page of ${PAGE_SIZE}, c=1`,
      subject: loadFigures('query service', result, 'req/s'),
      floors: [loadFigures(`query service, unfiltered page of ${PAGE_SIZE}`, floor, 'req/s')],
      ratio: result.latency.p99Ms / floor.latency.p99Ms,
    };
  });
  rows.push({
    scenario: `CountEvaluations on ${events} events`,
    case: `${filtered[0].name}, c=1`,
    subject: loadFigures('query service', results.get(countName(filtered[0]))!, 'req/s'),
    floors: [],
  });
  return rows;
}

function readChecks({ unfiltered, filtered }: Queries, results: Map<string, LoadResult>): Check[] {
  const floorP99 = results.get(listName(unfiltered))!.latency.p99Ms;
  const checks = filtered.flatMap((query): Check[] => {
    const p99 = results.get(listName(query))!.latency.p99Ms;
    return [
      {
        target: `Filtered page of ${PAGE_SIZE} (${query.name}) ≤ 10 ms p99 at c=1`,
        actual: ms(p99),
        met: p99 <= 10,
      },
      {
        target: `Filtered page of ${PAGE_SIZE} (${query.name}) within 2× of an unfiltered page (p99)`,
        actual: `${(p99 / floorP99).toFixed(2)}× (${ms(p99)} vs ${ms(floorP99)})`,
        met: p99 / floorP99 <= 2,
      },
    ];
  });
  const countP99 = results.get(countName(filtered[0]))!.latency.p99Ms;
  checks.push({
    target: 'CountEvaluations ≤ 2 ms p99',
    actual: `${ms(countP99)} (${filtered[0].name}, c=1)`,
    met: countP99 <= 2,
  });
  return checks;
}

const perSecond = (name: string, events: number, seconds: number): Measured => ({
  name,
  figures: [figure('', events / seconds, 'events/s'), figure('in', seconds, 's')],
});

export const rebuild: Scenario = {
  name: 'rebuild',
  description:
    'read models rebuilt from 1,000,000 events by the rebuild CLI, beside a raw read of the event table with pipelined Redis writes; then filtered ListEvaluations pages beside an unfiltered one, and CountEvaluations, on them',
  async run(ctx) {
    const stack = await createBenchStack(ctx);
    // As the services' own pools: pipelined (each tenant-scoped read is one round trip).
    const pool = createPool({
      url: stack.environment.config.databaseUrl,
      poolSize: 2,
      applicationName: 'crucible-bench',
    });
    try {
      const prefix = stack.environment.config.redisKeyPrefix;
      const evaluations = ctx.smoke ? 500 : 500_000;
      ctx.progress(`rebuild: writing ${(evaluations * 2).toLocaleString('en-US')} events into PostgreSQL`);
      const events = await generateEventLog(pool, evaluations);

      ctx.progress('rebuild: floor: raw read of the event table + pipelined Redis writes');
      const floor = await rawRebuild(pool, stack.redis, `${prefix}-floor:`);
      if (floor.events !== events) throw new Error(`the floor read ${floor.events} events of ${events}`);
      await deleteKeys(stack.redis, `${prefix}-floor:*`);

      ctx.progress('rebuild: the rebuild CLI (dist/services/query/cli/rebuild.js)');
      const cli = await runToCompletion({
        name: 'rebuild CLI',
        script: join(PROJECT_ROOT, 'dist', 'services', 'query', 'cli', 'rebuild.js'),
        env: stack.env,
        nodeArgs: ctx.serviceNodeArgs,
        owner: ctx.processes,
      });

      // The rebuilt read models must be whole: a query service started on them is caught up at once.
      const query = await stack.start('query');
      const [client] = createClients(EvaluationQueryServiceClient, query.address, 1);
      const reads = queries(evaluations);
      let results: Map<string, LoadResult>;
      try {
        const { checkpoint } = await unary(client!, client!.getProjectionStatus, {}, SETUP_DEADLINE_MS);
        if (checkpoint !== String(events))
          throw new Error(`after the rebuild the checkpoint is ${checkpoint}, not ${events}`);
        // A benchmark of a wrong answer is worthless: every page and the count are checked first.
        for (const q of [reads.unfiltered, ...reads.filtered]) await verifyPage(client!, evaluations, q);
        const counted = await verifyCount(client!, evaluations, reads.filtered[0]);
        ctx.progress(`rebuild: pages and count (${counted.toLocaleString('en-US')}) as generated; measuring at c=1`);
        results = await measureReads(ctx, client!, reads);
      } finally {
        client!.close();
      }

      const floorFigures = perSecond('raw event-table read + pipelined Redis writes', floor.events, floor.seconds);
      const rate = events / cli.seconds;
      const eventsText = events.toLocaleString('en-US');
      return {
        rows: [
          {
            scenario: 'read-model rebuild',
            case: `${eventsText} events`,
            subject: perSecond('rebuild CLI (process start to exit)', events, cli.seconds),
            floors: [floorFigures],
            ratio: rate / (floor.events / floor.seconds),
          },
          ...readRows(eventsText, reads, results),
        ],
        checks: [
          {
            target: 'Rebuild ≥ 50,000 events/s',
            actual: `${Math.round(rate).toLocaleString('en-US')} events/s (CLI, ${events} events)`,
            met: rate >= 50_000,
          },
          ...readChecks(reads, results),
        ],
        notes: [
          `Lists and count on the rebuilt read models (${evaluations.toLocaleString('en-US')} evaluations; languages by i % 4, running when i is odd, created 1 ms apart): closed loop at c=1, each call a first page (no token) of ${PAGE_SIZE}, newest first, full view; every page and the count were first checked against what the generator wrote. Ratio: filtered p99 ÷ unfiltered p99 (lower is better; the target is ≤ 2×).`,
        ],
      };
    } finally {
      await pool.end();
      await stack.close();
    }
  },
};
