import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { Evaluation, EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  EvaluationQueryServiceService,
  GetEvaluationResponse,
  ListEvaluationsResponse,
  WatchEvaluationResponse,
  WatchEvaluationsResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';

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

/**
 * EvaluationQueryService's definition with response serialisers that reuse remembered bytes
 * (WatchEvaluationResponse and WatchEvaluationsResponse have the same wire shape).
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
  watchEvaluation: { ...EvaluationQueryServiceService.watchEvaluation, responseSerialize: serializeUpdateResponse },
  watchEvaluations: { ...EvaluationQueryServiceService.watchEvaluations, responseSerialize: serializeUpdateResponse },
};
