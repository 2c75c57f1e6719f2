import type { Pool } from 'pg';
import type { BlobHome, LogStream } from '../../../shared/domain';
import { isTerminal, type Status } from '../../../shared/domain';
import { preparedStatement, queryAs } from '../../../shared/postgres';
import type { LogPart, LogState, StoredLogs } from '../handlers/read-logs';
import { readOrUnavailable } from './event-log';

/** The stream's stored size and whether the evaluation has ended. $1 eval_id. */
const STATE_SQL = `SELECT status, stdout_bytes::text AS stdout_bytes, stderr_bytes::text AS stderr_bytes, logs_expired_at
                     FROM evaluations WHERE eval_id = $1`;

/**
 * The bytes [$3, $4) of a stream, a row per segment they touch, each cut to them: the segments
 * are contiguous, so the rows hold at most $4 - $3 bytes in all. A segment in S3 gives its key
 * and the range of it instead. $1 eval_id, $2 stream.
 */
const WINDOW_SQL = `
  SELECT start_offset::text AS start_offset, s3_key, blob_store,
         greatest($3::bigint, start_offset)::text AS from_offset,
         least(start_offset + size, $4::bigint)::text AS to_offset,
         CASE WHEN content IS NOT NULL THEN
           substring(content FROM (greatest($3::bigint, start_offset) - start_offset + 1)::int
                             FOR (least(start_offset + size, $4::bigint) - greatest($3::bigint, start_offset))::int)
         END AS part
    FROM evaluation_log_segments
   WHERE eval_id = $1 AND stream = $2 AND start_offset < $4::bigint AND start_offset + size > $3::bigint
   ORDER BY start_offset`;

interface WindowRow {
  start_offset: string;
  s3_key: string | null;
  blob_store: BlobHome;
  from_offset: string;
  to_offset: string;
  part: Buffer | null;
}

/**
 * Log segments (`evaluation_log_segments`) through the read-only connection. Reads of the same
 * thing at the same time share one query: the followers of one log all wake on the same
 * change and ask for the same bytes, and 1,000 of them cost a query each way, not 1,000.
 */
export function createPostgresLogs(pool: Pool): StoredLogs {
  const inFlight = new Map<string, Promise<unknown>>();
  function shared<T>(key: string, read: () => Promise<T>): Promise<T> {
    const running = inFlight.get(key);
    if (running !== undefined) return running as Promise<T>;
    const started = read().finally(() => inFlight.delete(key));
    inFlight.set(key, started);
    return started;
  }

  return {
    // The key names the tenant: a read is shared only with readers who could make it.
    state: (tenant, evalId, stream) =>
      shared(`s\0${tenant}\0${evalId}\0${stream}`, () =>
        readOrUnavailable('reading a log', async (): Promise<LogState | 'unknown-evaluation'> => {
          const { rows } = await queryAs<{
            status: Status;
            stdout_bytes: string;
            stderr_bytes: string;
            logs_expired_at: Date | null;
          }>(pool, tenant, preparedStatement(STATE_SQL, [evalId]));
          const row = rows[0];
          if (row === undefined) return 'unknown-evaluation';
          const size = Number(stream === 'stdout' ? row.stdout_bytes : row.stderr_bytes);
          return {
            size,
            ended: isTerminal(row.status),
            ...(row.logs_expired_at !== null ? { expiredAt: row.logs_expired_at } : {}),
          };
        }),
      ),
    window: (tenant: string, evalId: string, stream: LogStream, from: number, to: number) =>
      shared(`w\0${tenant}\0${evalId}\0${stream}\0${from}\0${to}`, () =>
        readOrUnavailable('reading a log', async (): Promise<LogPart[]> => {
          const { rows } = await queryAs<WindowRow>(
            pool,
            tenant,
            preparedStatement(WINDOW_SQL, [evalId, stream, from, to]),
          );
          return rows.map((row) => {
            const start = Number(row.start_offset);
            const offset = Number(row.from_offset);
            const length = Number(row.to_offset) - offset;
            return row.part !== null
              ? { offset, length, bytes: row.part }
              : { offset, length, blob: { home: row.blob_store, key: row.s3_key ?? '', from: offset - start } };
          });
        }),
      ),
  };
}
