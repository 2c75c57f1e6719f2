import type { CallContext } from '../../../shared/grpc';
import {
  SEVERITY_TO_PROTO,
  VIOLATION_KIND_TO_PROTO,
  violationKindOfProto,
  type Severity as SeverityName,
  type ViolationKind,
} from '../../../shared/domain';
import {
  Severity,
  ViolationType,
  type ContainerLimits,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  SecurityEventKind,
  type ListSecurityEventsRequest,
  type ListSecurityEventsResponse,
  type SecurityEvent,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { decodeScopedToken, encodeScopedToken } from '../domain/page-tokens';
import { RequestChecks, type PageSizes } from '../domain/requests';

type Kind = 'container_created' | 'resource_violation';

/** What a page is filtered by, as the tables spell it. */
export interface SecurityEventFilter {
  readonly kinds: readonly Kind[];
  readonly violationTypes: readonly ViolationKind[];
  /** '' : any. */
  readonly evalId: string;
  /** '' : any. */
  readonly containerId: string;
  readonly occurredAfter?: Date;
  readonly occurredBefore?: Date;
}

/** One row of either table, as the page query returns it. */
export interface SecurityEventRow {
  readonly kind: Kind;
  readonly position: string;
  readonly revision: string;
  readonly eval_id: string;
  readonly container_id: string;
  readonly occurred_at: Date;
  readonly recorded_at: Date;
  readonly image: string | null;
  readonly limits: Record<string, number | string> | null;
  readonly violation_type: ViolationKind | null;
  readonly severity: SeverityName | null;
  readonly action_taken: string | null;
  readonly details: Record<string, unknown> | null;
}

/** The security tables (PostgreSQL). */
export interface SecurityEvents {
  /** Up to `limit` of `tenant`'s events below `beforePosition` (newest first). */
  page(
    tenant: string,
    filter: SecurityEventFilter,
    beforePosition: string | undefined,
    limit: number,
  ): Promise<SecurityEventRow[]>;
}

const PAGE_SIZES: PageSizes = { byDefault: 100, max: 1000 };
const MAX_CONTAINER_ID = 256;

/**
 * ListSecurityEvents: the security audit trail from PostgreSQL (the append-only tables
 * RecordSecurityEvent writes), newest first by position: keyset pages below the last position
 * served, so an event recorded while a client pages never shifts a page.
 */
export function createListSecurityEvents(deps: { readonly securityEvents: SecurityEvents }) {
  return async function listSecurityEvents(
    request: ListSecurityEventsRequest,
    context: CallContext,
  ): Promise<ListSecurityEventsResponse> {
    const checks = new RequestChecks();
    const filter = filterOf(request, checks);
    const pageSize = checks.pageSize(request.pageSize, PAGE_SIZES);
    const scope = [
      filter.kinds,
      filter.violationTypes,
      filter.evalId,
      filter.containerId,
      filter.occurredAfter?.toISOString() ?? null,
      filter.occurredBefore?.toISOString() ?? null,
    ];
    const cursor =
      request.pageToken === ''
        ? undefined
        : decodeScopedToken(request.pageToken, scope, checks, (c) => c.length === 1 && /^\d{1,19}$/.test(c[0] ?? ''));
    checks.done();

    const rows = await deps.securityEvents.page(context.caller.tenant, filter, cursor?.[0], pageSize + 1);
    const more = rows.length > pageSize;
    const page = more ? rows.slice(0, pageSize) : rows;
    const last = page.at(-1);
    return {
      events: page.map(eventOf),
      nextPageToken: more && last !== undefined ? encodeScopedToken(scope, [last.position]) : '',
    };
  };
}

function filterOf(request: ListSecurityEventsRequest, checks: RequestChecks): SecurityEventFilter {
  if (request.evalId !== '') checks.evalId(request.evalId);
  if (request.containerId.length > MAX_CONTAINER_ID) {
    checks.fail('container_id', 'TOO_LONG', `container_id must be at most ${MAX_CONTAINER_ID} characters`);
  } else checks.noNul(request.containerId, 'container_id');
  const violationTypes: ViolationKind[] = [];
  request.violationTypes.forEach((type, i) => {
    const kind = violationKindOfProto(type);
    if (kind === undefined) {
      checks.fail(`violation_types[${i}]`, 'UNKNOWN_VALUE', `violation_types[${i}] is not a violation type: ${type}`);
    } else if (!violationTypes.includes(kind)) violationTypes.push(kind);
  });
  let kinds: Kind[];
  switch (request.kind) {
    case SecurityEventKind.SECURITY_EVENT_KIND_UNSPECIFIED:
      kinds = violationTypes.length > 0 ? ['resource_violation'] : ['container_created', 'resource_violation'];
      break;
    case SecurityEventKind.SECURITY_EVENT_KIND_CONTAINER_CREATED:
      kinds = ['container_created'];
      if (request.violationTypes.length > 0) {
        checks.fail(
          'violation_types',
          'CONFLICT',
          'violation_types selects resource violations; kind says containers created',
        );
      }
      break;
    case SecurityEventKind.SECURITY_EVENT_KIND_RESOURCE_VIOLATION:
      kinds = ['resource_violation'];
      break;
    default:
      checks.fail('kind', 'UNKNOWN_VALUE', `kind has an unknown value ${request.kind}`);
      kinds = [];
  }
  const after = request.occurredAfter;
  const before = request.occurredBefore;
  if (after !== undefined && before !== undefined && after.getTime() >= before.getTime()) {
    checks.fail('occurred_before', 'OUT_OF_RANGE', 'occurred_before must be later than occurred_after');
  }
  return {
    kinds,
    violationTypes: violationTypes.sort(),
    evalId: request.evalId,
    containerId: request.containerId,
    ...(after !== undefined ? { occurredAfter: after } : {}),
    ...(before !== undefined ? { occurredBefore: before } : {}),
  };
}

function eventOf(row: SecurityEventRow): SecurityEvent {
  const common = {
    position: row.position,
    revision: row.revision,
    occurredAt: row.occurred_at,
    recordedAt: row.recorded_at,
  };
  if (row.kind === 'container_created') {
    const limits = row.limits ?? {};
    const wire: ContainerLimits = {
      cpuCores: Number(limits.cpuCores ?? 0),
      memoryBytes: String(limits.memoryBytes ?? '0'),
      pids: String(limits.pids ?? '0'),
      network: String(limits.network ?? ''),
      diskBytes: String(limits.diskBytes ?? '0'),
      timeoutSeconds: Number(limits.timeoutSeconds ?? 0),
    };
    return {
      ...common,
      containerCreated: { containerId: row.container_id, evalId: row.eval_id, image: row.image ?? '', limits: wire },
    };
  }
  return {
    ...common,
    resourceViolation: {
      containerId: row.container_id,
      evalId: row.eval_id,
      violationType:
        row.violation_type === null
          ? ViolationType.VIOLATION_TYPE_UNSPECIFIED
          : VIOLATION_KIND_TO_PROTO[row.violation_type],
      details: row.details ?? {},
      actionTaken: row.action_taken ?? '',
      severity: row.severity === null ? Severity.SEVERITY_UNSPECIFIED : SEVERITY_TO_PROTO[row.severity],
    },
  };
}
