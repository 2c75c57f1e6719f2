import { ValidationError, type FieldViolation } from '../errors';
import type { ReportExecutorHealthRequest } from '../generated/crucible/storage/v1/command_service';
import {
  executorStateOfProto,
  MAX_EXECUTOR_ID,
  MAX_EXECUTOR_METRIC_NAME,
  MAX_EXECUTOR_METRICS,
  MAX_EXECUTOR_VERSION,
  type ExecutorHealthReport,
} from './report';

/** A report's fields before they are checked: the status is the wire's number. */
export type UncheckedReport = Pick<
  ReportExecutorHealthRequest,
  'executorId' | 'status' | 'capacity' | 'running' | 'version' | 'metrics'
>;

/**
 * `metrics["<name>"]`, the path protovalidate gives a map entry. A name too long to be one is
 * cut in the path (the description says how long it was): an error detail is not the place to
 * echo a megabyte back.
 */
function metricField(name: string): string {
  const shown = name.length > MAX_EXECUTOR_METRIC_NAME ? `${name.slice(0, MAX_EXECUTOR_METRIC_NAME)}…` : name;
  return `metrics[${JSON.stringify(shown)}]`;
}

function checkText(out: FieldViolation[], field: string, value: string, max: number, required: boolean): void {
  const add = (rule: string, description: string): void => void out.push({ field, rule, description });
  if (value === '') {
    if (required) add('REQUIRED', `${field} is required`);
  } else if (value.length > max) add('TOO_LONG', `${field} must be at most ${max} characters, got ${value.length}`);
  // As every text the command service takes: what one part of the platform stores, all can.
  else if (value.includes('\u0000')) add('INVALID_CHARACTER', `${field} must not contain the character U+0000`);
}

function checkCount(out: FieldViolation[], field: string, value: number): void {
  if (value < 0) out.push({ field, rule: 'NOT_NEGATIVE', description: `${field} must be 0 or more, got ${value}` });
}

/**
 * Every rule a report breaks, each naming its field and rule (`executor_id` REQUIRED,
 * `metrics["load"]` FINITE, …). Written once for both ends: the command service refuses a
 * request that breaks one, and a stored report that breaks one (Redis takes writes from anyone
 * who reaches it) does not decode.
 */
export function healthReportViolations(report: UncheckedReport): FieldViolation[] {
  const out: FieldViolation[] = [];
  checkText(out, 'executor_id', report.executorId, MAX_EXECUTOR_ID, true);
  if (report.status === 0) out.push({ field: 'status', rule: 'REQUIRED', description: 'status is required' });
  else if (executorStateOfProto(report.status) === undefined) {
    out.push({
      field: 'status',
      rule: 'UNKNOWN',
      description: `status must be EXECUTOR_STATUS_HEALTHY, EXECUTOR_STATUS_DEGRADED or EXECUTOR_STATUS_DRAINING, got ${report.status}`,
    });
  }
  checkCount(out, 'capacity', report.capacity);
  checkCount(out, 'running', report.running);
  checkText(out, 'version', report.version, MAX_EXECUTOR_VERSION, false);
  const entries = Object.entries(report.metrics);
  if (entries.length > MAX_EXECUTOR_METRICS) {
    out.push({
      field: 'metrics',
      rule: 'TOO_MANY',
      description: `metrics must hold at most ${MAX_EXECUTOR_METRICS} entries, got ${entries.length}`,
    });
    // Refused whole: its entries are not checked one by one.
    return out;
  }
  for (const [name, value] of entries) {
    const field = metricField(name);
    if (name === '') out.push({ field, rule: 'REQUIRED', description: 'a metric name is required (1-128 characters)' });
    else if (name.length > MAX_EXECUTOR_METRIC_NAME) {
      out.push({
        field,
        rule: 'TOO_LONG',
        description: `a metric name must be at most ${MAX_EXECUTOR_METRIC_NAME} characters, got ${name.length}`,
      });
    } else if (name.includes('\u0000')) {
      out.push({
        field,
        rule: 'INVALID_CHARACTER',
        description: 'a metric name must not contain the character U+0000',
      });
    }
    if (!Number.isFinite(value)) {
      out.push({ field, rule: 'FINITE', description: `${field} must be a finite number, got ${value}` });
    }
  }
  return out;
}

/** A ReportExecutorHealth request as a report, or a ValidationError naming every broken rule. */
export function validateExecutorHealth(request: UncheckedReport): ExecutorHealthReport {
  const violations = healthReportViolations(request);
  const status = executorStateOfProto(request.status);
  if (violations.length > 0 || status === undefined) throw new ValidationError(violations);
  return {
    executorId: request.executorId,
    status,
    capacity: request.capacity,
    running: request.running,
    version: request.version,
    // A copy that is a plain record whatever the request object is (ts-proto builds it by assignment).
    metrics: Object.fromEntries(Object.entries(request.metrics)),
  };
}
