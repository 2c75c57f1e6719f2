import { ALL_TENANTS, isTerminal } from '../../../shared/domain';
import { FailedPreconditionError, NotFoundError } from '../../../shared/errors';
import type { Logger } from '../../../shared/logging';
import type { Caller } from '../../../shared/auth';
import { checkBoundExecutor, UploadedOutput, type EvaluationSnapshot } from '../domain';
import { tenantOfCall } from './decide-and-append';
import type { EvaluationStore, IdGenerator } from './ports';

/** What an executor promises of an output it is about to upload itself. */
export interface UploadRequest {
  readonly evalId: string;
  readonly size: number;
  /** Hex SHA-256 (lower case). */
  readonly sha256: string;
}

export interface UploadPartUrl {
  readonly partNumber: number;
  readonly url: string;
  readonly offset: number;
  readonly size: number;
}

export interface CreatedUpload {
  readonly uploadId: string;
  readonly partSize: number;
  readonly parts: readonly UploadPartUrl[];
  readonly expiresAt: Date;
}

/** The parts an executor says it PUT, each with the ETag the PUT answered. */
export interface UploadRef {
  readonly uploadId: string;
  readonly parts: readonly { readonly partNumber: number; readonly etag: string }[];
}

export type UploadState = 'open' | 'completed' | 'aborted';

/** A row of `output_uploads`. */
export interface UploadRecord {
  readonly uploadId: string;
  readonly evalId: string;
  readonly s3UploadId: string;
  readonly key: string;
  readonly size: number;
  readonly sha256: string;
  readonly partSize: number;
  readonly state: UploadState;
  readonly createdAt: Date;
  readonly expiresAt: Date;
}

/** The uploads in PostgreSQL (postgres/output-uploads.ts). */
export interface UploadRecords {
  /** Records an upload of an evaluation of `tenant`. */
  insert(tenant: string, record: UploadRecord): Promise<void>;
  /** The upload, when it is one of `tenant`'s. */
  find(tenant: string, uploadId: string): Promise<UploadRecord | undefined>;
  /**
   * Moves an upload of `tenant` (ALL_TENANTS: of any) from `from` to `to`; false when it was not
   * in `from` (someone else moved it).
   */
  setState(tenant: string, uploadId: string, from: UploadState, to: UploadState): Promise<boolean>;
  /** Open uploads of every tenant past their expiry, up to `limit`. */
  expired(now: Date, limit: number): Promise<UploadRecord[]>;
}

/** Thrown by MultipartTransport.complete when S3 refuses the parts (one missing, a wrong ETag). */
export class UploadPartsRefused extends Error {}

/** The S3 side of a direct upload (blobs/s3-direct-uploads.ts). */
export interface MultipartTransport {
  create(key: string): Promise<string>;
  /** Presigned PUT URLs of parts 1..`parts`, valid for `expiresInSeconds`. */
  partUrls(key: string, s3UploadId: string, parts: number, expiresInSeconds: number): Promise<string[]>;
  complete(key: string, s3UploadId: string, parts: UploadRef['parts']): Promise<void>;
  abort(key: string, s3UploadId: string): Promise<void>;
  /** The stored object's size, SHA-256 and first `headBytes` bytes, read through once. */
  digest(key: string, headBytes: number): Promise<{ size: number; sha256: string; head: Buffer }>;
  delete(key: string): Promise<void>;
}

export interface DirectUploadsDeps {
  readonly store: Pick<EvaluationStore, 'load'>;
  readonly records: UploadRecords;
  readonly transport: MultipartTransport;
  readonly newId: IdGenerator;
  readonly now: () => Date;
  readonly limits: { readonly partBytes: number; readonly uploadExpirySeconds: number; readonly previewBytes: number };
  readonly logger: Logger;
}

/**
 * Direct uploads of outputs. `caller`: who asks (undefined: the service); only the executor an
 * evaluation is bound to, or an admin, may upload for it.
 */
export interface DirectUploads {
  create(request: UploadRequest, caller?: Caller): Promise<CreatedUpload>;
  /** The output of a finished upload, checked against what its creator promised. */
  finish(evalId: string, ref: UploadRef, caller?: Caller): Promise<UploadedOutput>;
  /** Aborts the open uploads past their expiry; how many. */
  abortExpired(): Promise<number>;
}

/** Parts of one upload at most: the answer lists a URL per part. */
const MAX_PARTS = 1000;

/**
 * Outputs uploaded by the executor straight to S3 (presigned part URLs), so that a large
 * output never crosses this service: MLflow's proxied uploads time out near 800 MB, and parallel
 * parts made one evaluator 85× faster on 1 GiB. The completion checks what it gets: the parts
 * all there (S3 checks their ETags), then the object's size and SHA-256 read back once against
 * what CreateOutputUpload was told; only then does the command see the output.
 */
export function createDirectUploads(deps: DirectUploadsDeps): DirectUploads {
  const { records, transport, limits } = deps;

  /** The evaluation, when it exists and `caller` may upload for it. */
  async function boundEvaluation(evalId: string, caller: Caller | undefined): Promise<EvaluationSnapshot> {
    const { snapshot } = await deps.store.load(evalId, undefined, tenantOfCall({ caller }));
    if (snapshot === undefined) throw new NotFoundError(`evaluation ${evalId} not found`);
    checkBoundExecutor(snapshot, caller);
    return snapshot;
  }

  async function create(request: UploadRequest, caller: Caller | undefined): Promise<CreatedUpload> {
    const { evalId, size } = request;
    const snapshot = await boundEvaluation(evalId, caller);
    if (isTerminal(snapshot.status)) {
      throw new FailedPreconditionError(
        evalId,
        'EVALUATION_ENDED',
        `evaluation ${evalId} is ${snapshot.status}: it takes no output`,
      );
    }
    const partSize = Math.max(limits.partBytes, Math.ceil(size / MAX_PARTS));
    const count = Math.ceil(size / partSize);
    const uploadId = deps.newId();
    const key = `evaluations/${evalId}/output/upload-${uploadId}`;
    const createdAt = deps.now();
    const expiresAt = new Date(createdAt.getTime() + limits.uploadExpirySeconds * 1000);
    const s3UploadId = await transport.create(key);
    const urls = await transport.partUrls(key, s3UploadId, count, limits.uploadExpirySeconds);
    await records.insert(tenantOfCall({ caller }), {
      uploadId,
      evalId,
      s3UploadId,
      key,
      size,
      sha256: request.sha256,
      partSize,
      state: 'open',
      createdAt,
      expiresAt,
    });
    return {
      uploadId,
      partSize,
      expiresAt,
      parts: urls.map((url, i) => ({
        partNumber: i + 1,
        url,
        offset: i * partSize,
        size: Math.min(partSize, size - i * partSize),
      })),
    };
  }

  async function finish(evalId: string, ref: UploadRef, caller: Caller | undefined): Promise<UploadedOutput> {
    // Before the parts are put together: another executor must not finish this one's upload.
    await boundEvaluation(evalId, caller);
    const tenant = tenantOfCall({ caller });
    const record = await records.find(tenant, ref.uploadId);
    if (record === undefined) throw new NotFoundError(`upload ${ref.uploadId} not found`);
    if (record.evalId !== evalId) {
      throw new FailedPreconditionError(
        evalId,
        'UPLOAD_FOREIGN',
        `upload ${ref.uploadId} is of evaluation ${record.evalId}, not ${evalId}`,
      );
    }
    if (record.state === 'aborted' || (record.state === 'open' && deps.now() > record.expiresAt)) {
      throw new FailedPreconditionError(
        evalId,
        'UPLOAD_EXPIRED',
        `upload ${ref.uploadId} expired at ${record.expiresAt.toISOString()} (or was refused); start another one`,
      );
    }
    if (record.state === 'open') await completeParts(tenant, record, ref);
    const stored = await transport.digest(record.key, limits.previewBytes);
    if (stored.size !== record.size || stored.sha256 !== record.sha256) {
      // Not the output promised: nothing may refer to it, and the upload cannot be used again.
      await transport.delete(record.key).catch(() => undefined);
      await records.setState(tenant, record.uploadId, 'completed', 'aborted');
      throw new FailedPreconditionError(
        evalId,
        'UPLOAD_MISMATCH',
        `upload ${ref.uploadId} holds ${stored.size} bytes with SHA-256 ${stored.sha256}, not the ${record.size} bytes with SHA-256 ${record.sha256} it was created for`,
      );
    }
    // Not disposable: a completion that is refused leaves it for a retry (the orphan sweep
    // removes it once no row refers to it).
    return new UploadedOutput(record.key, record.size, record.sha256, stored.head, 's3', false);
  }

  async function completeParts(tenant: string, record: UploadRecord, ref: UploadRef): Promise<void> {
    const count = Math.ceil(record.size / record.partSize);
    const given = new Set(ref.parts.map((p) => p.partNumber));
    const missing = Array.from({ length: count }, (_, i) => i + 1).filter((n) => !given.has(n));
    const extra = ref.parts.filter((p) => p.partNumber < 1 || p.partNumber > count).map((p) => p.partNumber);
    if (missing.length > 0 || extra.length > 0 || given.size !== ref.parts.length) {
      throw new FailedPreconditionError(
        record.evalId,
        'UPLOAD_UNFINISHED',
        `upload ${record.uploadId} has parts 1 to ${count}, each once: ${
          missing.length > 0
            ? `part ${missing.slice(0, 10).join(', ')} missing`
            : `parts ${extra.join(', ')} unknown or repeated`
        }`,
      );
    }
    try {
      await transport.complete(
        record.key,
        record.s3UploadId,
        [...ref.parts].sort((a, b) => a.partNumber - b.partNumber),
      );
    } catch (err) {
      if (!(err instanceof UploadPartsRefused)) throw err;
      throw new FailedPreconditionError(
        record.evalId,
        'UPLOAD_UNFINISHED',
        `upload ${record.uploadId}: S3 refused its parts (${err.message}); PUT every part and pass each ETag`,
      );
    }
    await records.setState(tenant, record.uploadId, 'open', 'completed');
  }

  async function abortExpired(): Promise<number> {
    let aborted = 0;
    for (const record of await records.expired(deps.now(), 100)) {
      await transport.abort(record.key, record.s3UploadId).catch((err: unknown) => {
        deps.logger.debug('could not abort an expired upload in S3 (the orphan sweep removes what is left)', {
          uploadId: record.uploadId,
          err,
        });
      });
      if (await records.setState(ALL_TENANTS, record.uploadId, 'open', 'aborted')) aborted += 1;
    }
    return aborted;
  }

  return { create, finish, abortExpired };
}
