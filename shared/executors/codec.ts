import { executorStateToProto, EXECUTOR_STATES, type ExecutorState, type StoredExecutorHealth } from './report';
import { DEFAULT_TENANT, TENANT_PATTERN } from '../domain/tenants';
import { healthReportViolations } from './validate';

/** The stored form: JSON (small, readable in redis-cli), one object per report. */
interface StoredJson {
  executorId: string;
  status: ExecutorState;
  capacity: number;
  running: number;
  version: string;
  metrics: Record<string, number>;
  /** ISO-8601, the command service's clock. */
  reportedAt: string;
  /** Absent in reports stored before tenants: the default tenant's. */
  tenant?: string;
}

export function encodeExecutorHealth(health: StoredExecutorHealth): string {
  const stored: StoredJson = {
    executorId: health.executorId,
    status: health.status,
    capacity: health.capacity,
    running: health.running,
    version: health.version,
    metrics: { ...health.metrics },
    reportedAt: health.reportedAt.toISOString(),
    tenant: health.tenant,
  };
  return JSON.stringify(stored);
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

/**
 * A stored report, or undefined when the text is not one: anyone who reaches Redis can write
 * the key, so the reader holds it to the same rules as a request (healthReportViolations) and
 * skips what breaks them.
 */
export function decodeExecutorHealth(text: string): StoredExecutorHealth | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(parsed) || !isRecord(parsed.metrics)) return undefined;
  const { executorId, status, capacity, running, version, reportedAt, tenant = DEFAULT_TENANT } = parsed;
  const metrics = Object.entries(parsed.metrics);
  if (
    typeof executorId !== 'string' ||
    typeof status !== 'string' ||
    !(EXECUTOR_STATES as readonly string[]).includes(status) ||
    !Number.isSafeInteger(capacity) ||
    !Number.isSafeInteger(running) ||
    typeof version !== 'string' ||
    typeof reportedAt !== 'string' ||
    typeof tenant !== 'string' ||
    !TENANT_PATTERN.test(tenant) ||
    metrics.some(([, value]) => typeof value !== 'number')
  ) {
    return undefined;
  }
  const at = new Date(reportedAt);
  if (!Number.isFinite(at.getTime())) return undefined;
  const report = {
    executorId,
    status: status as ExecutorState,
    capacity: capacity as number,
    running: running as number,
    version,
    // Object.fromEntries defines each name as an own property, "__proto__" too.
    metrics: Object.fromEntries(metrics) as Record<string, number>,
  };
  if (healthReportViolations({ ...report, status: executorStateToProto(report.status) }).length > 0) return undefined;
  return { ...report, reportedAt: at, tenant };
}
