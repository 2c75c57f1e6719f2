import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { Evaluation, EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  EvaluationQueryServiceService,
  GetEvaluationResponse,
  ListEvaluationsResponse,
  ReadOutputResponse,
  WatchEvaluationResponse,
  WatchEvaluationsResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { varintSize, writeVarintAt } from './varint';

/**
 * The read models hold ts-proto-encoded messages, and serving one used to mean decoding it,
 * then encoding it again for the wire — once per call, and once per stream for a change that
 * 10,000 watchers receive. This module remembers the bytes a message was decoded from, and the
 * service definition below writes those bytes as they are (a length-delimited field is the
 * same bytes whether encoded again or copied).
 *
 * Keyed by object identity in a WeakMap: an entry lives exactly as long as its message, and a
 * message is never mutated after decoding (read models replace, never patch, their states).
 * This is a pure memo of `encode`, so one map serves every server in the process.
 */
const encodedBy = new WeakMap<object, Uint8Array>();

/** Decodes `bytes` and remembers them as the message's encoding. */
export function decodeRemembering<T extends object>(codec: { decode(input: Uint8Array): T }, bytes: Uint8Array): T {
  const message = codec.decode(bytes);
  encodedBy.set(message, bytes);
  return message;
}

function encoded<T extends object>(codec: { encode(message: T): BinaryWriter }, message: T): Uint8Array {
  let bytes = encodedBy.get(message);
  if (bytes === undefined) {
    bytes = codec.encode(message).finish();
    encodedBy.set(message, bytes);
  }
  return bytes;
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Field 1 (length-delimited) holding the given message bytes; the shape of every response here. */
function fieldOne(bytes: Uint8Array, writer = new BinaryWriter()): BinaryWriter {
  return writer.uint32(10).bytes(bytes);
}

function serializeUpdateResponse(value: WatchEvaluationResponse | WatchEvaluationsResponse): Buffer {
  if (value.update !== undefined && value.progress === undefined && value.caughtUp === undefined) {
    return toBuffer(fieldOne(encoded(EvaluationUpdate, value.update)).finish());
  }
  return toBuffer(WatchEvaluationResponse.encode(value).finish());
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
 * EvaluationQueryService's definition with response serialisers that reuse remembered bytes
 * (WatchEvaluationResponse and WatchEvaluationsResponse have the same wire shape), and one that
 * copies ReadOutput's chunks once.
 */
export const EvaluationQueryServiceWire: typeof EvaluationQueryServiceService = {
  ...EvaluationQueryServiceService,
  getEvaluation: {
    ...EvaluationQueryServiceService.getEvaluation,
    responseSerialize: (value: GetEvaluationResponse): Buffer =>
      value.evaluation === undefined
        ? toBuffer(GetEvaluationResponse.encode(value).finish())
        : toBuffer(fieldOne(encoded(Evaluation, value.evaluation)).finish()),
  },
  listEvaluations: {
    ...EvaluationQueryServiceService.listEvaluations,
    responseSerialize: (value: ListEvaluationsResponse): Buffer => {
      const writer = new BinaryWriter();
      for (const evaluation of value.evaluations) fieldOne(encoded(Evaluation, evaluation), writer);
      if (value.nextPageToken !== '') writer.uint32(18).string(value.nextPageToken);
      return toBuffer(writer.finish());
    },
  },
  readOutput: { ...EvaluationQueryServiceService.readOutput, responseSerialize: serializeReadOutput },
  watchEvaluation: { ...EvaluationQueryServiceService.watchEvaluation, responseSerialize: serializeUpdateResponse },
  watchEvaluations: { ...EvaluationQueryServiceService.watchEvaluations, responseSerialize: serializeUpdateResponse },
};
