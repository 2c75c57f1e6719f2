import type { Pool } from 'pg';
import type { BlobHome, LogStream } from '../../../shared/domain';
import { isTerminal, type Status } from '../../../shared/domain';
import { preparedStatement, queryAs } from '../../../shared/postgres';
import type { LogState, LogWindow, StoredLogs } from '../handlers/read-logs';
import { readOrUnavailable } from './event-log';

/**
 * Several reads in one statement (one snapshot, one round trip): read n asks for the bytes
 * [$3[n], $4[n]) of stream $2[n] of evaluation $1[n]. A row per segment each range touches, cut
 * to it (the segments are contiguous, so read n's rows hold at most $4[n] - $3[n] bytes), with
 * its evaluation's state; a read whose range touches no segment has one row with the segment's
 * columns NULL, one whose evaluation is not there (or not the tenant's) none. A segment in S3
 * gives its key and the range of it instead of bytes.
 */
const READ_SQL = `
  SELECT a.n::int AS n, e.status, e.logs_expired_at,
         (CASE WHEN a.stream = 'stdout' THEN e.stdout_bytes ELSE e.stderr_bytes END)::text AS stream_bytes,
         s.start_offset::text AS start_offset, s.s3_key, s.blob_store,
         greatest(a.from_offset, s.start_offset)::text AS from_offset,
         least(s.start_offset + s.size, a.to_offset)::text AS to_offset,
         CASE WHEN s.content IS NOT NULL THEN
           substring(s.content FROM (greatest(a.from_offset, s.start_offset) - s.start_offset + 1)::int
                               FOR (least(s.start_offset + s.size, a.to_offset) - greatest(a.from_offset, s.start_offset))::int)
         END AS part
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
           WITH ORDINALITY AS a(eval_id, stream, from_offset, to_offset, n)
    JOIN evaluations e ON e.eval_id = a.eval_id
    LEFT JOIN evaluation_log_segments s
      ON s.eval_id = a.eval_id AND s.stream = a.stream
     AND s.start_offset < a.to_offset AND s.start_offset + s.size > a.from_offset
   ORDER BY a.n, s.start_offset`;

interface ReadRow {
  n: number;
  status: Status;
  logs_expired_at: Date | null;
  stream_bytes: string;
  start_offset: string | null;
  s3_key: string | null;
  blob_store: BlobHome;
  from_offset: string;
  to_offset: string;
  part: Buffer | null;
}

/** Reads of one statement, at most. */
const READS_PER_STATEMENT = 32;
/**
 * Bytes the reads of one statement may ask for in all (at least one read goes): what a statement
 * can hold. A caught-up follower asks for little (read-logs.ts), a reader catching up for a window.
 */
const STATEMENT_BYTES = 8 * 1024 * 1024;
/** Statements in flight at once (the pool has more sessions: other reads are not starved). */
const STATEMENTS_IN_FLIGHT = 4;

/** An error of the data a statement read (SQLSTATE class 22, or XX001/XX002: a damaged page or index). */
function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && (code.startsWith('22') || code === 'XX001' || code === 'XX002');
}

interface Asked {
  readonly key: string;
  readonly tenant: string;
  readonly evalId: string;
  readonly stream: LogStream;
  readonly from: number;
  readonly to: number;
  readonly resolve: (window: LogWindow | 'unknown-evaluation') => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Log segments (`evaluation_log_segments`) through the read-only connection. Followers wake
 * together (those of one log on each of its changes, those of many logs when their writers
 * flush at once), so reads are shared and grouped. Reads asked in one turn of the event loop,
 * or while {@link STATEMENTS_IN_FLIGHT} statements run, wait; then the reads of one tenant go
 * together, one statement for up to {@link READS_PER_STATEMENT} of them asking
 * {@link STATEMENT_BYTES} in all (a burst of 100 followers of 100 logs costs a few statements,
 * not 100 queued for the pool's sessions; at most STATEMENTS_IN_FLIGHT × STATEMENT_BYTES are
 * read at once). The same read asked again while it waits is shared (1,000 followers of one log
 * cost one read); once its statement is sent it is not, since a reader woken by a commit must
 * not get a snapshot taken before it.
 */
export function createPostgresLogs(pool: Pool): StoredLogs {
  const waitingByKey = new Map<string, Promise<LogWindow | 'unknown-evaluation'>>();
  const waiting: Asked[] = [];
  let inFlight = 0;
  let scheduled = false;

  const schedule = (): void => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      runNext();
    });
  };

  const runNext = (): void => {
    while (inFlight < STATEMENTS_IN_FLIGHT && waiting.length > 0) {
      const tenant = (waiting[0] as Asked).tenant;
      const batch: Asked[] = [];
      let bytes = 0;
      for (let i = 0; i < waiting.length && batch.length < READS_PER_STATEMENT;) {
        const asked = waiting[i] as Asked;
        const size = asked.to - asked.from;
        if (asked.tenant === tenant && (batch.length === 0 || bytes + size <= STATEMENT_BYTES)) {
          batch.push(asked);
          bytes += size;
          waiting.splice(i, 1);
          waitingByKey.delete(asked.key);
        } else i += 1;
      }
      inFlight += 1;
      void readTogether(tenant, batch).finally(() => {
        inFlight -= 1;
        runNext();
      });
    }
  };

  const readTogether = async (tenant: string, batch: readonly Asked[]): Promise<void> => {
    try {
      const windows = await readOrUnavailable('reading a log', () => read(tenant, batch));
      batch.forEach((asked, i) => asked.resolve(windows[i] ?? 'unknown-evaluation'));
    } catch (err) {
      if (batch.length === 1 || !isDataError(err)) {
        for (const asked of batch) asked.reject(err);
        return;
      }
      // One log's data (a damaged segment): each read again on its own, so that only the
      // followers of that log hear of it; an outage meanwhile fails the rest at once.
      for (const [i, asked] of batch.entries()) {
        try {
          const [window] = await readOrUnavailable('reading a log', () => read(tenant, [asked]));
          asked.resolve(window ?? 'unknown-evaluation');
        } catch (alone) {
          asked.reject(alone);
          if (!isDataError(alone)) {
            for (const rest of batch.slice(i + 1)) rest.reject(alone);
            return;
          }
        }
      }
    }
  };

  const read = async (tenant: string, batch: readonly Asked[]): Promise<(LogWindow | undefined)[]> => {
    const { rows } = await queryAs<ReadRow>(
      pool,
      tenant,
      preparedStatement(READ_SQL, [
        batch.map((a) => a.evalId),
        batch.map((a) => a.stream),
        batch.map((a) => a.from),
        batch.map((a) => a.to),
      ]),
    );
    const windows: (LogWindow | undefined)[] = [];
    for (const row of rows) {
      let window = windows[row.n - 1];
      if (window === undefined) {
        const state: LogState = {
          size: Number(row.stream_bytes),
          ended: isTerminal(row.status),
          ...(row.logs_expired_at !== null ? { expiredAt: row.logs_expired_at } : {}),
        };
        window = { state, parts: [] };
        windows[row.n - 1] = window;
      }
      if (row.start_offset === null) continue;
      const start = Number(row.start_offset);
      const offset = Number(row.from_offset);
      const length = Number(row.to_offset) - offset;
      window.parts.push(
        row.part !== null
          ? { offset, length, bytes: row.part }
          : { offset, length, blob: { home: row.blob_store, key: row.s3_key ?? '', from: offset - start } },
      );
    }
    return windows;
  };

  return {
    read(tenant, evalId, stream, from, to) {
      // The key names the tenant: a read is shared only with readers who could make it.
      const key = `${tenant}\0${evalId}\0${stream}\0${from}\0${to}`;
      const queued = waitingByKey.get(key);
      if (queued !== undefined) return queued;
      const answer = new Promise<LogWindow | 'unknown-evaluation'>((resolve, reject) => {
        waiting.push({ key, tenant, evalId, stream, from, to, resolve, reject });
      });
      waitingByKey.set(key, answer);
      schedule();
      return answer;
    },
  };
}
