import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The append-only event log, the source of truth for every read model.
 *
 * Positions come from the single `event_log_head` row, not a sequence: a writer takes the next
 * position by updating that row, so it holds the row lock until it commits. Positions are
 * therefore dense (a rolled-back writer gives its number back) and become visible in commit
 * order, and a reader that follows "position > last seen" can never skip a late commit.
 * See docs/event-log.md for the cost (appends are serialised for the length of one commit).
 */
export class CreateEventLog1763877600001 implements MigrationInterface {
  name = 'CreateEventLog1763877600001';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE event_log_head (
        id        smallint PRIMARY KEY CHECK (id = 1),
        position  bigint NOT NULL CHECK (position >= 0)
      )`);
    await q.query(`INSERT INTO event_log_head (id, position) VALUES (1, 0)`);
    await q.query(`
      CREATE TABLE evaluation_events (
        position        bigint PRIMARY KEY,
        eval_id         text NOT NULL REFERENCES evaluations (eval_id),
        revision        bigint NOT NULL CHECK (revision >= 1),
        event_type      text NOT NULL CHECK (event_type IN ('EvaluationQueued', 'EvaluationStarted',
                          'EvaluationCompleted', 'EvaluationFailed', 'EvaluationCancelled')),
        data            jsonb NOT NULL,
        request_id      text,
        command_hash    char(64) NOT NULL,
        recorded_at     timestamptz NOT NULL,
        -- Kept for diagnosis (which writer appended what); ordering relies on position alone.
        transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
        UNIQUE (eval_id, revision)
      )`);
    // A request id identifies one command across all evaluations (SubmitEvaluation without an
    // eval_id has nothing else to be found by), and makes concurrent duplicates collide.
    await q.query(
      `CREATE UNIQUE INDEX evaluation_events_request_id_idx ON evaluation_events (request_id) WHERE request_id IS NOT NULL`,
    );
    await q.query(`
      CREATE FUNCTION evaluation_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'evaluation_events is append-only (% refused)', TG_OP;
      END $$`);
    await q.query(`
      CREATE TRIGGER evaluation_events_append_only
      BEFORE UPDATE OR DELETE OR TRUNCATE ON evaluation_events
      FOR EACH STATEMENT EXECUTE FUNCTION evaluation_events_append_only()`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE evaluation_events`);
    await q.query(`DROP FUNCTION evaluation_events_append_only()`);
    await q.query(`DROP TABLE event_log_head`);
  }
}
