import { createHash } from 'node:crypto';
import type { QueryConfig } from 'pg';

/**
 * The query as a named (prepared) statement: `pg` prepares a name once per connection, so
 * PostgreSQL parses and plans the text once per connection instead of on every call (most of
 * the load query's time: docs/benchmarks.md, "Figures behind the code"). The name is derived from the text, so
 * statements built at run time (one text per event type) need no registry, and two texts can
 * never share a name. Needs session-level pooling: a transaction-mode PgBouncer in front of
 * PostgreSQL would lose the prepared statements between calls.
 */
export function preparedStatement(text: string, values: unknown[]): QueryConfig {
  const name = `crucible_${createHash('sha1').update(text).digest('base64url')}`;
  return { name, text, values };
}
