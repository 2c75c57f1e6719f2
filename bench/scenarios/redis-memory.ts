import type { Redis } from 'ioredis';
import type { EvaluationEvent, RecordedEvent } from '../../shared/domain';
import { planBatch } from '../../services/query/projection/plan';
import { createKeyLayout, type KeyLayout } from '../../services/query/read-models/keys';
import { encodeStruct } from '../../services/query/read-models/update-encoding';
import { createRedisProjectionStore } from '../../services/query/redis/projection-store';
import { figure, type Measured, type Row } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack, deleteKeys } from '../support/stack';

const AT = '2026-01-01T00:00:00.000Z';

/** Evaluations written per projection step (their whole lives: every batch starts from nothing). */
const PER_STEP = 50;

type Kind = 'record' | 'history' | 'changes' | 'index' | 'other';

/** One evaluation's life: submitted, started and, unless `running`, completed. */
function life(evalId: string, first: number, metadata: Record<string, unknown>, running: boolean): RecordedEvent[] {
  const events: EvaluationEvent[] = [
    {
      type: 'EvaluationQueued',
      data: {
        codeHash: 'a'.repeat(64),
        codeSize: 120,
        language: 'python',
        engine: 'docker',
        timeoutSeconds: 60,
        metadata,
        createdAt: AT,
      },
    },
    {
      type: 'EvaluationStarted',
      data: { executorId: 'executor-1', containerId: `container-${evalId}`, startedAt: AT },
    },
    {
      type: 'EvaluationCompleted',
      data: { exitCode: 0, completedAt: AT, output: { previewBase64: 'b2s=', size: 2, location: 'postgres' } },
    },
  ];
  return events
    .slice(0, running ? 2 : 3)
    .map((event, i) => ({ position: String(first + i), evalId, revision: String(i + 1), recordedAt: AT, event }));
}

/** Projects `evaluations` lives under `prefix` with the service's own plan and script. */
async function project(
  redis: Redis,
  layout: KeyLayout,
  evaluations: number,
  metadata: Record<string, unknown>,
  running: boolean,
): Promise<void> {
  const store = createRedisProjectionStore(redis, layout, 1_000_000);
  let position = 0;
  for (let from = 0; from < evaluations; from += PER_STEP) {
    const events: RecordedEvent[] = [];
    for (let i = from; i < Math.min(evaluations, from + PER_STEP); i += 1)
      events.push(...life(`mem-${String(i).padStart(6, '0')}`, position + events.length + 1, metadata, running));
    const snapshots = Array.from({ length: layout.partitions }, () => ({
      checkpoint: BigInt(position),
      states: new Map(),
    }));
    const plan = planBatch(events, snapshots, layout);
    const results = await store.write(plan.writes);
    if (!results.every((r) => r === true)) throw new Error('a projection step was refused');
    position += events.length;
  }
}

/** MEMORY USAGE of every key under the prefix, summed by what the key holds. */
async function usageByKind(redis: Redis, layout: KeyLayout, prefix: string): Promise<Map<Kind, number>> {
  const usage = new Map<Kind, number>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    const sizes = await Promise.all(keys.map((key) => redis.memory('USAGE', key, 'SAMPLES', 0)));
    keys.forEach((key, i) => {
      const described = layout.describe(key)?.kind;
      const kind: Kind =
        described === 'record' || described === 'history' || described === 'changes' || described === 'index'
          ? described
          : 'other';
      usage.set(kind, (usage.get(kind) ?? 0) + Number(sizes[i] ?? 0));
    });
    cursor = next;
  } while (cursor !== '0');
  return usage;
}

/**
 * Redis memory per evaluation, by key kind, for small and 16 KiB metadata, ended and running:
 * beside the floor of one copy of the metadata and the record's other fields (the record alone).
 */
export const redisMemory: Scenario = {
  name: 'redis-memory',
  description:
    'Redis bytes per evaluation (MEMORY USAGE by key kind) after projecting whole lives, beside the record alone (one copy of the metadata: the floor)',
  async run(ctx) {
    const stack = await createBenchStack(ctx);
    const evaluations = ctx.smoke ? 100 : 1000;
    const rows: Row[] = [];
    const perEvaluation: Record<string, number> = {};
    const recordBytes: Record<string, number> = {};
    try {
      const cases = [
        { name: 'small metadata', metadata: { suite: 'bench', model: 'm-1' } },
        { name: '16 KiB metadata', metadata: { suite: 'bench', blob: 'm'.repeat(16 * 1024) } },
      ];
      for (const { name, metadata } of cases) {
        for (const running of [false, true]) {
          const prefix = `${stack.environment.config.redisKeyPrefix}mem`;
          const layout = createKeyLayout(prefix, 1);
          ctx.progress(`redis-memory: ${evaluations} ${running ? 'running' : 'ended'} evaluations, ${name}`);
          await project(stack.redis, layout, evaluations, metadata, running);
          const usage = await usageByKind(stack.redis, layout, prefix);
          await deleteKeys(stack.redis, `${prefix}:*`);
          const per = (kind: Kind): number => (usage.get(kind) ?? 0) / evaluations;
          const total = [...usage.values()].reduce((a, b) => a + b, 0) / evaluations;
          const kept = total - per('changes');
          const label = `${name}, ${running ? 'running (2 events)' : 'ended (3 events)'}`;
          perEvaluation[label] = total;
          recordBytes[label] = per('record');
          const subject: Measured = {
            name: 'bytes per evaluation',
            figures: [
              figure('all', total, 'B'),
              figure('without the change log', kept, 'B'),
              figure('record', per('record'), 'B'),
              figure('history', per('history'), 'B'),
              figure('change log', per('changes'), 'B'),
              figure('indexes', per('index'), 'B'),
            ],
          };
          const floor: Measured = {
            name: 'the record alone (metadata once)',
            figures: [figure('', per('record'), 'B'), figure('metadata', encodeStruct(metadata).length, 'B')],
          };
          rows.push({ scenario: 'Redis memory', case: label, subject, floors: [floor], ratio: total / per('record') });
        }
      }
    } finally {
      await stack.close();
    }
    const big = perEvaluation['16 KiB metadata, ended (3 events)'];
    const record = recordBytes['16 KiB metadata, ended (3 events)'];
    const beyond = big === undefined || record === undefined ? Infinity : big - 2 * record;
    return {
      rows,
      checks: [
        {
          // One copy in the record, one in the submit's change-log entry (trimmed by retention);
          // the rest (the other entries, the indexes) small beside either.
          target: 'An ended evaluation holds its 16 KiB of metadata at most twice (all − 2 × record ≤ 2 KiB)',
          actual: `${Math.round(big ?? NaN).toLocaleString('en-US')} B per evaluation, ${Math.round(record ?? NaN).toLocaleString('en-US')} B of record`,
          met: beyond <= 2048,
        },
      ],
      notes: [
        'ratio: all bytes per evaluation over the record alone (lower is better). The change log is trimmed to CHANGE_LOG_RETENTION entries per partition; the rest stays as long as the evaluation does.',
      ],
    };
  },
};
