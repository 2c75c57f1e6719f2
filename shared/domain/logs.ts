import { LogStream as LogStreamWire } from '../generated/crucible/storage/v1/evaluation';
import type { FieldViolation } from '../errors';
import type { LogStream } from './events';

/** The log streams as the wire names them; the one map both ways. */
export const LOG_STREAM_TO_PROTO: Readonly<Record<LogStream, LogStreamWire>> = {
  stdout: LogStreamWire.LOG_STREAM_STDOUT,
  stderr: LogStreamWire.LOG_STREAM_STDERR,
};

const BY_WIRE = new Map<number, LogStream>(
  Object.entries(LOG_STREAM_TO_PROTO).map(([stream, wire]) => [wire as number, stream as LogStream]),
);

/** The stream a request names; undefined for UNSPECIFIED or an unknown value. */
export function logStreamOfProto(value: LogStreamWire): LogStream | undefined {
  return BY_WIRE.get(value);
}

/** The violation of a request's log stream (`field`): UNSPECIFIED or unknown; none for STDOUT, STDERR. */
export function logStreamViolation(value: LogStreamWire, field: string): FieldViolation | undefined {
  if (logStreamOfProto(value) !== undefined) return undefined;
  return {
    field,
    rule: value === LogStreamWire.LOG_STREAM_UNSPECIFIED ? 'REQUIRED' : 'UNKNOWN_VALUE',
    description: `${field} must be LOG_STREAM_STDOUT or LOG_STREAM_STDERR, not ${value}`,
  };
}
