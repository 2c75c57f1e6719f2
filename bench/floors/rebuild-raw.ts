import type { Redis } from 'ioredis';
import type { Pool } from 'pg';

interface EventRow {
  position: string;
  eval_id: string;
  revision: string;
  event_type: string;
  data: string;
}

const BATCH = 10_000;
// ORDER BY names the column: a bare `position` would be the text alias, ordered as text.
const SQL = `SELECT position::text AS position, eval_id, revision::text AS revision, event_type, data::text AS data
               FROM evaluation_events WHERE position > $1 ORDER BY evaluation_events.position LIMIT ${BATCH}`;

/**
 * Floor for read-model rebuild: reads the event log in position order (keyset pages of
 * 10,000) and writes each event as it was read (type, revision, position, data as JSON text)
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
  let page = (await pool.query<EventRow>(SQL, ['0'])).rows;
  while (page.length > 0) {
    const last = page[page.length - 1]!;
    const pipeline = redis.pipeline();
    for (const event of page) {
      const { event_type: eventType, revision, position, data } = event;
      pipeline.hset(`${keyPrefix}${event.eval_id}`, { eventType, revision, position, data });
    }
    pipeline.set(`${keyPrefix}checkpoint`, last.position);
    events += page.length;
    // One connection keeps pipelines in order; at most two pages are in flight.
    const previous = writing;
    writing = pipeline.exec();
    const [next] = await Promise.all([pool.query<EventRow>(SQL, [last.position]), previous]);
    page = next.rows;
  }
  await writing;
  return { events, seconds: (performance.now() - start) / 1000 };
}
