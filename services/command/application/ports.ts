import type { BlobHome, BodyKind, LogStream, RecordedEvent, Status } from '../../../shared/domain';
import type { Decision, EvaluationSnapshot, LoggedCommand } from '../domain';

/**
 * A body as PostgreSQL records it: its bytes (small) or the S3 key they were uploaded to. A log
 * segment's bytes are kept the same way (kind: its stream).
 */
export type StoredBody =
  | {
      readonly kind: BodyKind | LogStream;
      readonly size: number;
      readonly content: Buffer;
      readonly s3Key?: undefined;
      readonly home?: undefined;
    }
  | {
      readonly kind: BodyKind | LogStream;
      readonly size: number;
      readonly s3Key: string;
      /** Which store holds the object. */
      readonly home: BlobHome;
      readonly content?: undefined;
    };

/** What the write needs besides the decision. */
export interface AppendRequest {
  readonly decision: Extract<Decision, { kind: 'append' }>;
  readonly body?: StoredBody;
  readonly requestId?: string;
  readonly commandHash: string;
  readonly recordedAt: Date;
  /** Who reported it (the caller's subject, or SERVICE_REPORTER): kept with the event. */
  readonly reporter: string;
  /** The call's deadline: the write must not commit after it (it fails instead). */
  readonly deadline?: Date;
  /** The tenant it is written in (row-level security: a write of another tenant's evaluation finds none). */
  readonly tenant: string;
}

export type AppendOutcome =
  /**
   * `state`: the evaluation as the write left it, as a load would read it now (RecentStates keeps
   * it); undefined when the write could not tell (its submit's event was not found).
   */
  | { readonly kind: 'appended'; readonly event: RecordedEvent; readonly state?: EvaluationSnapshot }
  /** Someone else changed the evaluation (or took the id, or the request id) first: decide again. */
  | { readonly kind: 'conflict' };

/** The write model in PostgreSQL. */
export interface EvaluationStore {
  /**
   * Loads an evaluation and the earlier command with `requestId` (if any) in one round trip, as
   * `tenant` sees them: another tenant's evaluation or request is not there.
   */
  load(
    evalId: string | undefined,
    requestId: string | undefined,
    tenant: string,
  ): Promise<{ snapshot?: EvaluationSnapshot; priorRequest?: LoggedCommand }>;
  /**
   * Writes the state change and appends one event atomically, or reports a conflict. It throws
   * CommitOutcomeUnknownError when the write may have committed (its connection failed after it
   * was sent); any other UnavailableError, and DeadlineError, mean it wrote nothing.
   */
  append(request: AppendRequest): Promise<AppendOutcome>;
  /**
   * When `tenant`'s evaluation was archived by retention (undefined when it was not): asked only
   * for a command whose evaluation the load did not find, whose events may have left the log.
   */
  archivedAt?(evalId: string, tenant: string): Promise<Date | undefined>;
}

/**
 * Where large bodies are written: S3, or the fallback file store while S3 is unreachable
 * (blobs/fallback-store.ts). Each write says which; the key and that home are recorded in
 * PostgreSQL.
 */
export interface BlobStore {
  /** `sha256Hex`, when the caller has it, spares S3's signer hashing `content` again. */
  put(key: string, content: Buffer, sha256Hex?: string): Promise<BlobHome>;
  /** Exactly `size` bytes from `source` as they come (shared/blobs: BlobStore.putStream). */
  putStream(key: string, size: number, source: AsyncIterable<Buffer>): Promise<BlobHome>;
  /** Removes an object no record refers to; absent already is fine. */
  delete(key: string, home: BlobHome): Promise<void>;
}

/** Announces committed events to the query side (best effort: the log is the truth). */
export interface EventPublisher {
  /** `traceparent`: the span of the call that wrote it, carried to the query side (shared/tracing). */
  publish(event: RecordedEvent, traceparent?: string): Promise<void>;
}

export interface Clock {
  now(): Date;
}

export type IdGenerator = () => string;

export type { Status };
