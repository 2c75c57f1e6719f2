import { createHash } from 'node:crypto';
import type { Client } from 'pg';
import { changeChannel, encodeChange } from '../../../shared/changes';
import type { Config } from '../../../shared/config';
import { partitionOf } from '../../../shared/partitions';
import type { RedisClient } from '../../../shared/redis';
import type { BodyKind, BodyRef, EvaluationEvent, RecordedEvent } from '../../../shared/domain';

/**
 * Writes the event log the way the command side does — `evaluations` row, one
 * `evaluation_events` row, `event_log_head` bumped, all in one transaction — so the query
 * side can be tested without the command service. Publishing on pub/sub is optional (the
 * fast path), so tests can also leave the projection to catch up from PostgreSQL.
 */
export interface EventWriter {
  /** Appends one event for `evalId` at its next revision; publishes it when `publish`. */
  append(evalId: string, event: EvaluationEvent, options?: { publish?: boolean }): Promise<RecordedEvent>;
  submit(
    evalId: string,
    options?: { createdAt?: Date; metadata?: Record<string, unknown>; publish?: boolean },
  ): Promise<RecordedEvent>;
  start(evalId: string, options?: { publish?: boolean }): Promise<RecordedEvent>;
  complete(evalId: string, options?: { output?: BodyRef; publish?: boolean }): Promise<RecordedEvent>;
  fail(evalId: string, options?: { error?: BodyRef; publish?: boolean }): Promise<RecordedEvent>;
  cancel(evalId: string, options?: { publish?: boolean }): Promise<RecordedEvent>;
  /** Stores a whole body row (inline bytes, or an S3 key). */
  putBody(evalId: string, kind: BodyKind, body: { content: Buffer } | { s3Key: string; size: number }): Promise<void>;
}

/** The status an event leaves; null: the one it had. */
const STATUS_OF: Record<EvaluationEvent['type'], string | null> = {
  EvaluationQueued: 'queued',
  EvaluationStarted: 'running',
  EvaluationCompleted: 'completed',
  EvaluationFailed: 'failed',
  EvaluationCancelled: 'cancelled',
  EvaluationMetricsRecorded: null,
  EvaluationContainerCreated: null,
  EvaluationSecurityViolation: null,
  EvaluationLogsAppended: null,
  EvaluationBlobMoved: null,
};

export function createEventWriter(
  sql: Client,
  redis: RedisClient,
  announceAs: Pick<Config, 'redisKeyPrefix' | 'readModelPartitions'>,
  clock: () => Date = () => new Date(),
): EventWriter {
  // One transaction at a time on this connection (pg queues queries, not transactions).
  let queue: Promise<unknown> = Promise.resolve();
  const serially = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work, work);
    queue = run.catch(() => undefined);
    return run;
  };

  const append: EventWriter['append'] = (evalId, event, options = {}) =>
    serially(async () => {
      const recordedAt = clock();
      await sql.query('BEGIN');
      try {
        let revision: string;
        if (event.type === 'EvaluationQueued') {
          const d = event.data;
          await sql.query(
            `INSERT INTO evaluations (eval_id, status, code_hash, code_size, language, engine, timeout_seconds,
                                      metadata, created_at, updated_at, revision)
             VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, 1)`,
            [
              evalId,
              d.codeHash,
              d.codeSize,
              d.language,
              d.engine,
              d.timeoutSeconds,
              JSON.stringify(d.metadata),
              d.createdAt,
              recordedAt,
            ],
          );
          revision = '1';
        } else {
          const { rows } = await sql.query<{ revision: string }>(
            `UPDATE evaluations SET status = COALESCE($2, status), revision = revision + 1, updated_at = $3 WHERE eval_id = $1
             RETURNING revision::text AS revision`,
            [evalId, STATUS_OF[event.type], recordedAt],
          );
          if (rows[0] === undefined) throw new Error(`no evaluation ${evalId}`);
          revision = rows[0].revision;
        }
        const head = await sql.query<{ position: string }>(
          `UPDATE event_log_head SET position = position + 1 WHERE id = 1 RETURNING position::text AS position`,
        );
        const position = head.rows[0]?.position ?? '0';
        await sql.query(
          `INSERT INTO evaluation_events (position, eval_id, revision, event_type, data, command_hash, recorded_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)`,
          [position, evalId, revision, event.type, JSON.stringify(event.data), '0'.repeat(64), recordedAt],
        );
        await sql.query('COMMIT');
        const recorded: RecordedEvent = { position, evalId, revision, recordedAt: recordedAt.toISOString(), event };
        if (options.publish === true) {
          const partition = partitionOf(evalId, announceAs.readModelPartitions);
          await redis.spublish(changeChannel(announceAs.redisKeyPrefix, partition), encodeChange(recorded));
        }
        return recorded;
      } catch (err) {
        await sql.query('ROLLBACK');
        throw err;
      }
    });

  const now = (): string => clock().toISOString();
  const noBody: BodyRef = { previewBase64: '', size: 0, location: '' };
  const publishOf = (options: { publish?: boolean }): { publish?: boolean } =>
    options.publish === undefined ? {} : { publish: options.publish };

  return {
    append,
    submit: (evalId, options = {}) =>
      append(
        evalId,
        {
          type: 'EvaluationQueued',
          data: {
            codeHash: createHash('sha256').update(evalId).digest('hex'),
            codeSize: 8,
            language: 'python',
            engine: 'docker',
            timeoutSeconds: 30,
            metadata: options.metadata ?? { suite: 'query-it' },
            createdAt: (options.createdAt ?? clock()).toISOString(),
          },
        },
        publishOf(options),
      ),
    start: (evalId, options = {}) =>
      append(
        evalId,
        { type: 'EvaluationStarted', data: { executorId: 'exec-1', containerId: 'c-1', startedAt: now() } },
        publishOf(options),
      ),
    complete: (evalId, options = {}) =>
      append(
        evalId,
        { type: 'EvaluationCompleted', data: { exitCode: 0, completedAt: now(), output: options.output ?? noBody } },
        publishOf(options),
      ),
    fail: (evalId, options = {}) =>
      append(
        evalId,
        {
          type: 'EvaluationFailed',
          data: { exitCode: 1, reason: 'error', completedAt: now(), error: options.error ?? noBody },
        },
        publishOf(options),
      ),
    cancel: (evalId, options = {}) =>
      append(evalId, { type: 'EvaluationCancelled', data: { reason: 'test', cancelledAt: now() } }, publishOf(options)),
    putBody: (evalId, kind, body) =>
      serially(async () => {
        if ('content' in body) {
          await sql.query(`INSERT INTO evaluation_bodies (eval_id, kind, size, content) VALUES ($1, $2, $3, $4)`, [
            evalId,
            kind,
            body.content.length,
            body.content,
          ]);
        } else {
          await sql.query(`INSERT INTO evaluation_bodies (eval_id, kind, size, s3_key) VALUES ($1, $2, $3, $4)`, [
            evalId,
            kind,
            body.size,
            body.s3Key,
          ]);
        }
      }),
  };
}
