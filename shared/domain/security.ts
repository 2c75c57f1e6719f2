import { Severity as SeverityWire, ViolationType } from '../generated/crucible/storage/v1/evaluation';
import type { Severity, ViolationKind } from './events';

/**
 * Security events' names as the log and the security tables spell them, and their wire enums:
 * the one place that maps them, both ways (as status.ts does for statuses).
 */

/** The wire enum of each violation kind, in the enum's order (the order of `violations`). */
export const VIOLATION_KIND_TO_PROTO: Readonly<Record<ViolationKind, ViolationType>> = {
  memory: ViolationType.VIOLATION_TYPE_MEMORY,
  cpu: ViolationType.VIOLATION_TYPE_CPU,
  pids: ViolationType.VIOLATION_TYPE_PIDS,
  disk: ViolationType.VIOLATION_TYPE_DISK,
  network: ViolationType.VIOLATION_TYPE_NETWORK,
  syscall: ViolationType.VIOLATION_TYPE_SYSCALL,
  timeout: ViolationType.VIOLATION_TYPE_TIMEOUT,
  other: ViolationType.VIOLATION_TYPE_OTHER,
};

const VIOLATION_KINDS: ReadonlyMap<number, ViolationKind> = new Map(
  Object.entries(VIOLATION_KIND_TO_PROTO).map(([kind, wire]) => [wire as number, kind as ViolationKind]),
);

/** The kind of a wire value; undefined for UNSPECIFIED and values this version does not know. */
export function violationKindOfProto(value: ViolationType): ViolationKind | undefined {
  return VIOLATION_KINDS.get(value);
}

export const SEVERITY_TO_PROTO: Readonly<Record<Severity, SeverityWire>> = {
  low: SeverityWire.SEVERITY_LOW,
  medium: SeverityWire.SEVERITY_MEDIUM,
  high: SeverityWire.SEVERITY_HIGH,
  critical: SeverityWire.SEVERITY_CRITICAL,
};

const SEVERITIES: ReadonlyMap<number, Severity> = new Map([
  [SeverityWire.SEVERITY_UNSPECIFIED, 'medium'],
  ...Object.entries(SEVERITY_TO_PROTO).map(([name, wire]): [number, Severity] => [wire, name as Severity]),
]);

/** The severity of a wire value (UNSPECIFIED reads as medium); undefined for values this version does not know. */
export function severityOfProto(value: SeverityWire): Severity | undefined {
  return SEVERITIES.get(value);
}
