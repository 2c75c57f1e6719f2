import type { RecordedEvent } from '../domain';

/**
 * The Redis pub/sub channel on which the command side announces each committed event.
 *
 * Pub/sub delivers at most once, so it is only the fast path: the query side applies a
 * message when it is the next position, and otherwise (gap, restart, Redis outage) catches up
 * from the event log in PostgreSQL, which is the source of truth.
 */
export function changeChannel(keyPrefix: string): string {
  return `${keyPrefix}:changes`;
}

/** Encodes a recorded event as a pub/sub message (JSON: small, and readable in redis-cli). */
export function encodeChange(event: RecordedEvent): string {
  return JSON.stringify(event);
}

/** Decodes a pub/sub message; undefined when it is not a recorded event (never trust a channel). */
export function decodeChange(message: string): RecordedEvent | undefined {
  try {
    const parsed = JSON.parse(message) as Partial<RecordedEvent>;
    if (
      typeof parsed.position === 'string' &&
      typeof parsed.evalId === 'string' &&
      typeof parsed.revision === 'string' &&
      typeof parsed.recordedAt === 'string' &&
      typeof parsed.event?.type === 'string'
    ) {
      return parsed as RecordedEvent;
    }
  } catch {
    // fall through
  }
  return undefined;
}
