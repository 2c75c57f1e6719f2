import type { LogStream, RecordedEvent } from '../domain';
import { partitionTag } from '../partitions';

/**
 * The sharded pub/sub channel (SPUBLISH, Redis 7.0+) on which the command side announces each
 * committed event of an evaluation of read-model partition `partition`.
 *
 * One channel per partition, tagged as the partition's keys are: on a Redis Cluster each
 * channel lives on the shard that holds its partition, so a message crosses no other node
 * (classic PUBLISH is forwarded to every node of a cluster), and a query replica needs one
 * subscriber connection per shard.
 *
 * Pub/sub delivers at most once, and anyone who can reach Redis can publish on it, so a
 * message is only a wake-up call: the query side reads what it applies from the event log in
 * PostgreSQL, the source of truth, and believes nothing else of the message.
 */
export function changeChannel(keyPrefix: string, partition: number | '*'): string {
  return `${keyPrefix}:${partitionTag(keyPrefix, partition)}:changed`;
}

/** Every partition's change channel, partition 0 first (`changeChannel(prefix, '*')` is their glob). */
export function changeChannels(keyPrefix: string, partitions: number): string[] {
  return Array.from({ length: partitions }, (_, p) => changeChannel(keyPrefix, p));
}

/**
 * Encodes a recorded event as a pub/sub message (JSON: small, and readable in redis-cli). The
 * position comes first, whatever order the event's own keys are in: announcedPosition reads it
 * from there; the traceparent of the call that wrote it (when traced) comes last, where
 * announcedTraceparent reads it.
 */
export function encodeChange(event: RecordedEvent, traceparent?: string): string {
  const { position, evalId, revision, recordedAt } = event;
  return JSON.stringify({
    position,
    evalId,
    revision,
    recordedAt,
    event: event.event,
    ...(traceparent !== undefined ? { traceparent } : {}),
  });
}

/** `"traceparent":"00-…"` last: encodeChange writes it after everything else. */
const TRAILING_TRACEPARENT = /,"traceparent":"(00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})"\}$/;

/**
 * The traceparent a message carries, or undefined. Read from its end without parsing the rest,
 * as the position is read from its start; a forged one at most adds spans to someone's trace.
 */
export function announcedTraceparent(message: string): string | undefined {
  return TRAILING_TRACEPARENT.exec(message)?.[1];
}

/** `"position":"<digits>"` first: encodeChange writes the position before anything else. */
const LEADING_POSITION = /^\{"position":"([1-9]\d{0,18})"/;

/**
 * The position a message announces, or undefined when it names none. Read from the message's
 * start without parsing the rest (a message may carry tens of KiB of metadata that the query
 * side never uses); a forged message can name a position, which costs one read of the log.
 */
export function announcedPosition(message: string): bigint | undefined {
  const match = LEADING_POSITION.exec(message);
  return match?.[1] === undefined ? undefined : BigInt(match[1]);
}

/**
 * The start of a message announcing a log append, as encodeChange writes it: position, evalId,
 * revision, recordedAt, then the event, its type first and its data's stream first (the unit
 * test of decideChange's AppendLogSegment fails when that order changes).
 */
const LOGS_APPENDED =
  /^\{"position":"[1-9]\d{0,18}","evalId":("(?:[^"\\]|\\.){1,768}"),"revision":"\d{1,19}","recordedAt":"[^"\\]{1,64}","event":\{"type":"EvaluationLogsAppended","data":\{"stream":"(stdout|stderr)"/;

/**
 * The log a message says was appended to, or undefined (another event, or no such message).
 * Only a hint that its followers may find new bytes in PostgreSQL, read from the message's start
 * without parsing it: they read the log there, as they would on the read model's change that
 * comes later; a forged message costs them one read.
 */
export function announcedLogsAppended(message: string): { evalId: string; stream: LogStream } | undefined {
  const match = LOGS_APPENDED.exec(message);
  if (match?.[1] === undefined || match[2] === undefined) return undefined;
  try {
    return { evalId: JSON.parse(match[1]) as string, stream: match[2] as LogStream };
  } catch {
    return undefined; // a forged escape
  }
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
