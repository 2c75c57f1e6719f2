import type { Redis } from 'ioredis';
import type { Pool, QueryConfig } from 'pg';
import { EVENT_BATCH_BYTES, READ_AFTER_SQL } from '../../services/query/postgres/event-log';
import { ALL_TENANTS } from '../../shared/domain';
import { queryAs } from '../../shared/postgres';

/** Every column as the text PostgreSQL sends: the floor stores the event's JSON as it came. */
interface EventRow {
  position: string;
  eval_id: string;
  revision: string;
  event_type: string;
  data: string;
}

const BATCH = 10_000;
const AS_TEXT = { getTypeParser: () => (text: string) => text } as unknown as QueryConfig['types'];

/** The service's own read of the log (its byte bound included), pages of up to BATCH events. */
const page = async (pool: Pool, after: string): Promise<EventRow[]> =>
  (
    await queryAs<EventRow>(pool, ALL_TENANTS, {
      text: READ_AFTER_SQL,
      values: [after, BATCH, EVENT_BATCH_BYTES],
      types: AS_TEXT,
    })
  ).rows;

/**
 * Floor for read-model rebuild: reads the event log in position order with the query service's
 * own statement (keyset pages of up to 10,000) and writes each event as it was read (type, revision, position, data as JSON text)
 * into a per-evaluation Redis hash, one pipeline per page plus its checkpoint, reading the
 * next page while the last one is written. No decoding, folding, ordering checks, indexes or
 * atomic scripts: the fastest the two stores go together on this machine.
 */
export async function rawRebuild(
  pool: Pool,
  redis: Redis,
  keyPrefix: string,
): Promise<{ events: number; seconds: number }> {
  const start = performance.now();
  let events = 0;
  let writing: Promise<unknown> = Promise.resolve();
  let rows = await page(pool, '0');
  while (rows.length > 0) {
    const last = rows[rows.length - 1]!;
    const pipeline = redis.pipeline();
    for (const event of rows) {
      const { event_type: eventType, revision, position, data } = event;
      pipeline.hset(`${keyPrefix}${event.eval_id}`, { eventType, revision, position, data });
    }
    pipeline.set(`${keyPrefix}checkpoint`, last.position);
    events += rows.length;
    // One connection keeps pipelines in order; at most two pages are in flight.
    const previous = writing;
    writing = pipeline.exec();
    const [next] = await Promise.all([page(pool, last.position), previous]);
    rows = next;
  }
  await writing;
  return { events, seconds: (performance.now() - start) / 1000 };
}
