import type { RecordedEvent } from '../../../shared/domain';

/**
 * Per-partition checkpoints: the highest global position each partition has applied. They are
 * written only by the apply script, in the same atomic step as the data they cover. The read
 * models as a whole have reached the smallest of them.
 *
 * A checkpoint also names the event it is at (`<position> <evalId>@<revision>@<recordedAt>`):
 * the read models record which log they were built from, so that a log that went backwards
 * (PostgreSQL restored from a backup, a failover that lost commits, a database recreated under
 * a live Redis) is noticed by the next catch-up instead of its reused positions being taken
 * for new events. A bare `<position>` (written before the event was recorded) names none.
 */
export interface Checkpoints {
  /** One per partition, in partition order (0 when a partition has none yet). */
  readAll(): Promise<bigint[]>;
  /** The same, each with the event it names (undefined for none). */
  readMarks(): Promise<CheckpointMark[]>;
}

export interface CheckpointMark {
  readonly position: bigint;
  /** eventMark() of the event at `position`, when the checkpoint names it. */
  readonly event: string | undefined;
}

/** What a checkpoint records of the event it is at: enough to tell it from another log's. */
export function eventMark(event: Pick<RecordedEvent, 'evalId' | 'revision' | 'recordedAt'>): string {
  return `${event.evalId}@${event.revision}@${event.recordedAt}`;
}

/** The stored value of a checkpoint at `position`, naming `event` when given. */
export function checkpointValue(position: bigint, event: string | undefined): string {
  return event === undefined ? position.toString() : `${position} ${event}`;
}

export function parseCheckpointMark(value: string | null): CheckpointMark {
  if (value === null) return { position: 0n, event: undefined };
  const space = value.indexOf(' ');
  if (space < 0) return { position: BigInt(value), event: undefined };
  return { position: BigInt(value.slice(0, space)), event: value.slice(space + 1) };
}

export function parseCheckpoint(value: string | null): bigint {
  return parseCheckpointMark(value).position;
}

export function minCheckpoint(checkpoints: readonly bigint[]): bigint {
  return checkpoints.reduce((min, c) => (c < min ? c : min), checkpoints[0] ?? 0n);
}
