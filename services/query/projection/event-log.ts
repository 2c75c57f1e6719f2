import type { RecordedEvent } from '../../../shared/domain';

/** Consecutive events of the log, oldest first. */
export interface EventBatch {
  readonly events: RecordedEvent[];
  /**
   * The read stopped at a bound (the count asked for, or the log's byte budget): more events
   * may follow. False when it reached the end of what is committed.
   */
  readonly full: boolean;
}

/**
 * The event log as the projection reads it (PostgreSQL in production: postgres/event-log.ts).
 * Positions are dense and become visible in commit order, so reading "after N" in position
 * order never skips an event that commits later.
 */
export interface EventLog {
  /**
   * Events with a position above `after`, in position order: at most `limit`, and no more
   * than the log's byte budget (at least one event when any is stored), so that a batch of
   * large events is never held whole.
   */
  readAfter(after: bigint, limit: number): Promise<EventBatch>;
  /** The highest committed position (0 for an empty log). */
  headPosition(): Promise<bigint>;
  /**
   * The position at or below which events may have left the log (archived by retention; 0
   * when none did). They leave only as a prefix: every position above it is still there.
   */
  horizon(): Promise<bigint>;
  /** The events of the given evaluations up to and including position `upTo`, in position order (repairs). */
  eventsOf(evalIds: readonly string[], upTo: bigint): Promise<RecordedEvent[]>;
  /** The position of the evaluation's first event, or undefined when the log has none. */
  firstPositionOf(evalId: string): Promise<bigint | undefined>;
  /** When the event at `position` was recorded, or undefined when there is none. */
  recordedAt(position: bigint): Promise<Date | undefined>;
}
