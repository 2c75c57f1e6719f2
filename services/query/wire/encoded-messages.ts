import { BinaryWriter } from '@bufbuild/protobuf/wire';
import type { handleServerStreamingCall, handleUnaryCall } from '@grpc/grpc-js';
import type { Evaluation, EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  EvaluationQueryServiceService,
  ReadOutputResponse,
  WatchEvaluationResponse,
  type CaughtUp,
  type EvaluationQueryServiceServer,
  type GetEvaluationRequest,
  type ListEvaluationsRequest,
  type ReadOutputRequest,
  type StreamProgress,
  type WaitEvaluationRequest,
  type WatchEvaluationRequest,
  type WatchEvaluationsRequest,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import type { Encoded } from './encoded';
import { Timestamp } from '../../../shared/generated/google/protobuf/timestamp';
import { varintSize, writeVarintAt } from './varint';

/** GetEvaluation's answer: the record's bytes, written as they were read. */
export interface GetEvaluationOut {
  readonly evaluation: Encoded<Evaluation>;
}

/** WaitEvaluation's answer: the record's bytes, written as they were read, and whether it has ended. */
export interface WaitEvaluationOut {
  readonly evaluation: Encoded<Evaluation>;
  readonly terminal: boolean;
}

export interface ListEvaluationsOut {
  readonly evaluations: readonly Encoded<Evaluation>[];
  readonly nextPageToken: string;
  readonly coversEndedSince?: Date;
}

/** A WatchEvaluation(s) message: an update already encoded (one encoding for every watcher), or a marker. */
export type WatchOut =
  | { readonly update: Encoded<EvaluationUpdate> }
  | { readonly caughtUp: CaughtUp }
  | { readonly progress: StreamProgress };

/** As ts-proto's generated toTimestamp (the encoded-messages test compares the bytes). */
function timestampOf(date: Date): Timestamp {
  const ms = date.getTime();
  return { seconds: Math.trunc(ms / 1000).toString(), nanos: (ms % 1000) * 1_000_000 };
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Field 1 (length-delimited) holding the given message bytes; the shape of every response here. */
function fieldOne(bytes: Uint8Array, writer = new BinaryWriter()): BinaryWriter {
  return writer.uint32(10).bytes(bytes);
}

/** WatchEvaluationResponse and WatchEvaluationsResponse have the same wire shape (a test checks it). */
function serializeWatchOut(value: WatchOut): Buffer {
  const update = 'update' in value ? value.update : undefined;
  if (update?.unreadable !== undefined) {
    // No client could decode it: a progress marker at its position moves the client's cursor
    // past it (resuming from there does not meet it again), as for a change its filter drops.
    const progress = { position: update.message.position };
    return toBuffer(WatchEvaluationResponse.encode({ progress }).finish());
  }
  if (update !== undefined) return toBuffer(fieldOne(update.bytes).finish());
  // A marker (caught up, progress): no update, so it is ts-proto's message as it is.
  return toBuffer(WatchEvaluationResponse.encode(value as Omit<WatchEvaluationResponse, 'update'>).finish());
}

/** Room in front of a ReadOutput chunk for the response's other bytes: 3 tags and 3 varints. */
const READ_OUTPUT_HEADROOM = 32;
/** Backing stores of the chunks {@link allocateReadOutputChunk} handed out (and so may write in front of). */
const withHeadroom = new WeakSet<ArrayBufferLike>();

/**
 * A buffer for the chunk of one ReadOutput response, up to `size` bytes, with room in front of
 * it that {@link serializeReadOutput} fills with the response's other fields: the response then
 * goes to grpc-js without a copy of its own.
 */
export function allocateReadOutputChunk(size: number): Buffer {
  const backing = Buffer.allocUnsafeSlow(READ_OUTPUT_HEADROOM + size);
  withHeadroom.add(backing.buffer);
  return backing.subarray(READ_OUTPUT_HEADROOM);
}

/**
 * Encodes a ReadOutputResponse for the wire. A chunk from {@link allocateReadOutputChunk} gets
 * `offset` and `total_size` written in front of it, then its own tag and length (fields may come
 * in any order on the wire): no copy. Any other chunk is copied once, into exactly what
 * `ReadOutputResponse.encode` writes; the generated serialiser copies it twice more (into the
 * writer's result, then into a Buffer), which for a large output was most of the query
 * service's own CPU per MB.
 */
export function serializeReadOutput(value: ReadOutputResponse): Buffer {
  const offset = Number(value.offset);
  const totalSize = Number(value.totalSize);
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(totalSize) || offset < 0 || totalSize < 0) {
    return toBuffer(ReadOutputResponse.encode(value).finish());
  }
  const { chunk } = value;
  // Each field is left out at its default, as ts-proto does.
  const chunkField = chunk.length > 0 ? 1 + varintSize(chunk.length) : 0;
  const numbers = (offset > 0 ? 1 + varintSize(offset) : 0) + (totalSize > 0 ? 1 + varintSize(totalSize) : 0);
  const writeNumbers = (buffer: Buffer, at: number): number => {
    let i = at;
    if (offset > 0) {
      buffer[i++] = 0x10; // field 2, varint
      i = writeVarintAt(buffer, i, offset);
    }
    if (totalSize > 0) {
      buffer[i++] = 0x18; // field 3, varint
      i = writeVarintAt(buffer, i, totalSize);
    }
    return i;
  };
  const writeChunkTag = (buffer: Buffer, at: number): number => {
    buffer[at] = 0x0a; // field 1, length-delimited
    return writeVarintAt(buffer, at + 1, chunk.length);
  };
  if (chunk.length > 0 && chunk.byteOffset === READ_OUTPUT_HEADROOM && withHeadroom.has(chunk.buffer)) {
    const start = READ_OUTPUT_HEADROOM - numbers - chunkField;
    const backing = Buffer.from(chunk.buffer, 0, READ_OUTPUT_HEADROOM + chunk.length);
    writeChunkTag(backing, writeNumbers(backing, start));
    return backing.subarray(start);
  }
  const buffer = Buffer.allocUnsafe(chunkField + chunk.length + numbers);
  if (chunk.length > 0) buffer.set(chunk, writeChunkTag(buffer, 0));
  writeNumbers(buffer, chunkField + chunk.length);
  return buffer;
}

/**
 * EvaluationQueryService's definition with response serialisers that write the bytes the read
 * models hold (handlers answer with the Out types above), and one that copies ReadOutput's
 * chunks once.
 */
export const EvaluationQueryServiceWire = {
  ...EvaluationQueryServiceService,
  getEvaluation: {
    ...EvaluationQueryServiceService.getEvaluation,
    responseSerialize: (value: GetEvaluationOut): Buffer => toBuffer(fieldOne(value.evaluation.bytes).finish()),
  },
  listEvaluations: {
    ...EvaluationQueryServiceService.listEvaluations,
    responseSerialize: (value: ListEvaluationsOut): Buffer => {
      const writer = new BinaryWriter();
      for (const evaluation of value.evaluations) fieldOne(evaluation.bytes, writer);
      if (value.nextPageToken !== '') writer.uint32(18).string(value.nextPageToken);
      // Field 3, a Timestamp, as ts-proto writes it.
      if (value.coversEndedSince !== undefined)
        Timestamp.encode(timestampOf(value.coversEndedSince), writer.uint32(26).fork()).join();
      return toBuffer(writer.finish());
    },
  },
  waitEvaluation: {
    ...EvaluationQueryServiceService.waitEvaluation,
    responseSerialize: (value: WaitEvaluationOut): Buffer => {
      const writer = fieldOne(value.evaluation.bytes);
      // Field 2 (varint), left out when false as ts-proto does.
      if (value.terminal) writer.uint32(16).bool(true);
      return toBuffer(writer.finish());
    },
  },
  readOutput: { ...EvaluationQueryServiceService.readOutput, responseSerialize: serializeReadOutput },
  watchEvaluation: { ...EvaluationQueryServiceService.watchEvaluation, responseSerialize: serializeWatchOut },
  watchEvaluations: { ...EvaluationQueryServiceService.watchEvaluations, responseSerialize: serializeWatchOut },
} as const;

/**
 * The handlers EvaluationQueryServiceWire serves: ts-proto's, with the Out types as answers. (A
 * type, not an interface: grpc-js takes implementations as an index-signature record.)
 */
export type QueryServiceImplementation = {
  getEvaluation: handleUnaryCall<GetEvaluationRequest, GetEvaluationOut>;
  listEvaluations: handleUnaryCall<ListEvaluationsRequest, ListEvaluationsOut>;
  countEvaluations: EvaluationQueryServiceServer['countEvaluations'];
  readOutput: handleServerStreamingCall<ReadOutputRequest, ReadOutputResponse>;
  getOutputUrl: EvaluationQueryServiceServer['getOutputUrl'];
  readLogs: EvaluationQueryServiceServer['readLogs'];
  watchEvaluation: handleServerStreamingCall<WatchEvaluationRequest, WatchOut>;
  watchEvaluations: handleServerStreamingCall<WatchEvaluationsRequest, WatchOut>;
  getProjectionStatus: EvaluationQueryServiceServer['getProjectionStatus'];
  getEvaluationMetrics: EvaluationQueryServiceServer['getEvaluationMetrics'];
  getEvaluationEvents: EvaluationQueryServiceServer['getEvaluationEvents'];
  waitEvaluation: handleUnaryCall<WaitEvaluationRequest, WaitEvaluationOut>;
  listSecurityEvents: EvaluationQueryServiceServer['listSecurityEvents'];
  listExecutors: EvaluationQueryServiceServer['listExecutors'];
  getQueueMetrics: EvaluationQueryServiceServer['getQueueMetrics'];
};
