import { LogStream as LogStreamWire } from '../generated/crucible/storage/v1/evaluation';
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
