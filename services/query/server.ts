import type { OutputUrlConfig, StreamConfig } from '../../shared/config';
import {
  createCalls,
  createGrpcServer,
  serverStream,
  unary,
  type GrpcServer,
  type ServerAccess,
  type RpcMetrics,
} from '../../shared/grpc';
import type { Tracing } from '../../shared/tracing';
import type { Logger } from '../../shared/logging';
import { createGetEvaluation } from './handlers/get-evaluation';
import { createGetEvaluationEvents, type EvaluationEvents } from './handlers/get-evaluation-events';
import { createGetEvaluationMetrics, type MetricSeries } from './handlers/get-evaluation-metrics';
import { createGetOutputUrl, type OutputUrls } from './handlers/get-output-url';
import { createGetProjectionStatus } from './handlers/get-projection-status';
import { createGetQueueMetrics } from './handlers/get-queue-metrics';
import { createListSecurityEvents, type SecurityEvents } from './handlers/list-security-events';
import type { QueueMetrics } from './redis/queue-metrics';
import type { LiveExecutors } from './redis/executors';
import { createListExecutors } from './handlers/list-executors';
import { createCountEvaluations, createListEvaluations } from './handlers/list-evaluations';
import { createReadLogs, type StoredLogs } from './handlers/read-logs';
import { createReadOutput, type BlobReaders, type BodyStore } from './handlers/read-output';
import { createWaitEvaluation } from './handlers/wait-evaluation';
import { createWatchEvaluation } from './handlers/watch-evaluation';
import { createWatchEvaluations } from './handlers/watch-evaluations';
import type { ChangeHub } from './live/change-hub';
import type { LogHints } from './live/log-hints';
import type { Readiness } from './live/readiness';
import type { ReadGuard } from './live/read-guard';
import type { OpenCalls } from './live/open-calls';
import type { EventLog } from './projection/event-log';
import type { ProjectorStatus } from './projection/projector';
import type { ChangeLog } from './read-models/change-log';
import type { Checkpoints } from './read-models/checkpoints';
import type { EvaluationHistory } from './read-models/evaluation-history';
import type { EvaluationList } from './read-models/evaluation-list';
import type { RetiredEvaluations } from './archive/retired-evaluations';
import type { StreamBuffers } from './live/stream-buffers';
import type { EvaluationRecords } from './read-models/evaluation-record';
import { EvaluationQueryServiceWire, type QueryServiceImplementation } from './wire/encoded-messages';
import type { Shutdown } from './live/shutdown';

export const QUERY_SERVICE_NAME = 'crucible.storage.v1.EvaluationQueryService';

/** Requests are small (the largest: 1000 eval ids); refuse anything bigger early. */
const MAX_REQUEST_BYTES = 1024 * 1024;

export interface QueryServerDeps {
  /** Request bytes held at once (MAX_REQUEST_BYTES_IN_FLIGHT; shared/grpc/admission.ts). */
  readonly maxRequestBytesInFlight: number;
  /** REQUEST_READ_TIMEOUT_MS (shared/grpc/admission.ts). */
  readonly requestReadTimeoutMs: number;
  /** CONNECTION_IDLE_MS (shared/grpc/server.ts). */
  readonly connectionIdleMs: number;
  readonly records: EvaluationRecords;
  /** Evaluations that left the read models (HOT_RETENTION, the archive). */
  readonly retired: RetiredEvaluations;
  readonly list: EvaluationList;
  readonly history: EvaluationHistory;
  readonly changeLog: ChangeLog;
  readonly checkpoints: Checkpoints;
  readonly hub: ChangeHub;
  /** Wake-ups of live log followers, straight from the command side's announcements. */
  readonly logHints: LogHints;
  readonly readiness: Readiness;
  readonly guard: ReadGuard;
  readonly openCalls: OpenCalls;
  readonly projector: { status(): ProjectorStatus };
  readonly eventLog: EventLog;
  /** The audit trail (GetEvaluationEvents), read from the event log. */
  readonly evaluationEvents: EvaluationEvents;
  readonly metrics: MetricSeries;
  readonly securityEvents: SecurityEvents;
  readonly queue: QueueMetrics;
  readonly executors: LiveExecutors;
  /** INDEXED_METADATA_KEYS: the metadata keys list filters may name. */
  readonly indexedMetadataKeys: readonly string[];
  readonly bodies: BodyStore;
  readonly blobs: BlobReaders;
  readonly logs: StoredLogs;
  readonly outputUrls: OutputUrls;
  readonly outputUrlConfig: OutputUrlConfig;
  readonly streams: StreamConfig;
  /** Aborted on SIGTERM: open streams end with UNAVAILABLE naming their resume point. */
  readonly shutdown: Shutdown;
  readonly logger: Logger;
  /** Transport, gate and reflection (shared/grpc/access.ts). */
  readonly access: ServerAccess;
  /** Told when a WatchEvaluations client is too slow and falls back to catch-up reads. */
  readonly onSlowConsumer?: () => void;
  /** Where the watch streams' buffers are counted (metrics). */
  readonly streamBuffers?: StreamBuffers;
  /** Since when ended evaluations are surely in the read models (ListEvaluations, CountEvaluations). */
  readonly coversEndedSince?: () => Date;
  /** Where every call is counted (shared/grpc/rpc-metrics.ts); left out: nowhere. */
  readonly rpcMetrics?: RpcMetrics;
  /** A span per call (shared/tracing); left out: none. */
  readonly tracing?: Tracing;
}

/**
 * Binds EvaluationQueryService to its handlers (one per RPC, in handlers/), with health
 * (NOT_SERVING until the projection has caught up) and reflection.
 */
export function createQueryServer(deps: QueryServerDeps): GrpcServer {
  const { logger } = deps;
  const calls = createCalls(logger, deps.access.gate, deps.rpcMetrics, deps.tracing);
  const implementation: QueryServiceImplementation = {
    getEvaluation: unary('GetEvaluation', createGetEvaluation(deps), calls),
    listEvaluations: unary('ListEvaluations', createListEvaluations(deps), calls),
    countEvaluations: unary('CountEvaluations', createCountEvaluations(deps), calls),
    readOutput: serverStream('ReadOutput', createReadOutput(deps), calls),
    getOutputUrl: unary('GetOutputUrl', createGetOutputUrl(deps), calls),
    readLogs: serverStream('ReadLogs', createReadLogs(deps), calls),
    watchEvaluation: serverStream('WatchEvaluation', createWatchEvaluation(deps), calls),
    watchEvaluations: serverStream(
      'WatchEvaluations',
      createWatchEvaluations({
        ...deps,
        ...(deps.onSlowConsumer !== undefined ? { onFallback: deps.onSlowConsumer } : {}),
      }),
      calls,
    ),
    getProjectionStatus: unary('GetProjectionStatus', createGetProjectionStatus(deps), calls),
    getEvaluationEvents: unary('GetEvaluationEvents', createGetEvaluationEvents(deps), calls),
    waitEvaluation: unary('WaitEvaluation', createWaitEvaluation(deps), calls),
    getEvaluationMetrics: unary('GetEvaluationMetrics', createGetEvaluationMetrics(deps), calls),
    listSecurityEvents: unary('ListSecurityEvents', createListSecurityEvents(deps), calls),
    getQueueMetrics: unary('GetQueueMetrics', createGetQueueMetrics(deps), calls),
    listExecutors: unary('ListExecutors', createListExecutors(deps), calls),
  };
  return createGrpcServer({
    services: [{ name: QUERY_SERVICE_NAME, definition: EvaluationQueryServiceWire, implementation }],
    logger,
    maxReceiveMessageBytes: MAX_REQUEST_BYTES,
    maxRequestBytesInFlight: deps.maxRequestBytesInFlight,
    requestReadTimeoutMs: deps.requestReadTimeoutMs,
    connectionIdleMs: deps.connectionIdleMs,
    initialStatus: 'NOT_SERVING',
    access: deps.access,
    calls,
  });
}
