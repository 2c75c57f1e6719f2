/**
 * Who may call what: the roles, and for every RPC of both services the roles that may call it
 * (docs/security.md prints this table). `admin` may call everything. A test fails when an RPC
 * of the protos has no entry here, so a new RPC cannot ship open to everyone.
 */

import { DEFAULT_TENANT } from '../domain/tenants';

export type Role = 'api' | 'executor' | 'reader' | 'admin';
export const ROLES: readonly Role[] = ['api', 'executor', 'reader', 'admin'];

/** A caller as authentication found it. */
export interface Caller {
  /** Who: a token's `sub`, a certificate's mapped name; what an evaluation is bound to. */
  readonly subject: string;
  readonly roles: ReadonlySet<Role>;
  readonly tenant: string;
}

/** The caller of every call when AUTH_MODE=none: one admin, in one tenant. */
export const ANONYMOUS_ADMIN: Caller = Object.freeze({
  subject: 'anonymous',
  roles: new Set<Role>(['admin']),
  tenant: DEFAULT_TENANT,
});

const QUERY: readonly Role[] = ['api', 'reader'];
const EXECUTOR: readonly Role[] = ['executor'];

/** The roles (besides `admin`) that may call each RPC, by its short name (unique across both services). */
export const METHOD_ROLES: Readonly<Record<string, readonly Role[]>> = Object.freeze({
  // EvaluationCommandService: the API submits and cancels, executors report the rest.
  SubmitEvaluation: ['api'],
  CancelEvaluation: ['api'],
  StartEvaluation: EXECUTOR,
  CompleteEvaluation: EXECUTOR,
  CompleteEvaluationStream: EXECUTOR,
  CreateOutputUpload: EXECUTOR,
  FailEvaluation: EXECUTOR,
  RecordMetrics: EXECUTOR,
  RecordSecurityEvent: EXECUTOR,
  ReportExecutorHealth: EXECUTOR,
  AppendLogs: EXECUTOR,
  // EvaluationQueryService: every query, for the API and for readers.
  GetEvaluation: QUERY,
  ListEvaluations: QUERY,
  CountEvaluations: QUERY,
  ReadOutput: QUERY,
  GetOutputUrl: QUERY,
  ReadLogs: QUERY,
  WatchEvaluation: QUERY,
  WatchEvaluations: QUERY,
  GetProjectionStatus: QUERY,
  GetEvaluationEvents: QUERY,
  WaitEvaluation: QUERY,
  GetEvaluationMetrics: QUERY,
  ListSecurityEvents: QUERY,
  GetQueueMetrics: QUERY,
  ListExecutors: QUERY,
});

/** Whether `caller` may call `method`; an RPC missing from the table is for admins only. */
export function mayCall(caller: Caller, method: string): boolean {
  if (caller.roles.has('admin')) return true;
  const allowed = METHOD_ROLES[method] ?? [];
  return allowed.some((role) => caller.roles.has(role));
}

/** The known roles among `names`: anything else an identity provider put there is ignored. */
export function rolesOf(names: readonly unknown[]): Set<Role> {
  return new Set(ROLES.filter((role) => names.includes(role)));
}

/** docs/security.md's roles table (generated: tools/docs-config.ts). */
export function rolesTable(): string {
  const header = `| RPC | ${ROLES.map((r) => `\`${r}\``).join(' | ')} |`;
  const rule = `| --- | ${ROLES.map(() => ':---:').join(' | ')} |`;
  const rows = Object.keys(METHOD_ROLES).map((method) => {
    const caller = (role: Role): Caller => ({ subject: '', tenant: '', roles: new Set([role]) });
    return `| \`${method}\` | ${ROLES.map((role) => (mayCall(caller(role), method) ? '✓' : '')).join(' | ')} |`;
  });
  return [header, rule, ...rows].join('\n');
}
