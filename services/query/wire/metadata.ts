import { tenantOrDefault } from '../../../shared/domain';
import { varintSize, writeVarintAt } from './varint';

/** `Evaluation.metadata` (field 23, length-delimited): its tag as a varint. */
const METADATA_TAG = [0xba, 0x01] as const;
const METADATA_FIELD = 23;
/** `Evaluation.status` (field 2, a varint). */
const STATUS_FIELD = 2;
/** `EvaluationUpdate.evaluation` (field 1, length-delimited). */
const EVALUATION_FIELD = 1;
/** `Evaluation.tenant_id` (field 32, a string). */
const TENANT_FIELD = 32;

/**
 * A field found at the top level of a message: where its tag began; for a length-delimited
 * field, [start, end) of its value; for a varint, its value.
 */
interface FieldSpan {
  readonly tagStart: number;
  readonly start: number;
  readonly end: number;
  readonly varint?: number;
}

/**
 * Reads a varint at `at`; [value, position after it], or undefined past `end` or past the 10
 * bytes a varint takes at most. The value is exact up to 2^53, which every tag and length this
 * service writes is far below; larger ones (a negative int32 or int64 takes 10 bytes) are only
 * skipped.
 */
function readVarint(bytes: Uint8Array, at: number, end: number): [number, number] | undefined {
  let value = 0;
  let scale = 1;
  for (let i = at; i < end && i < at + 10; i += 1) {
    const byte = bytes[i] as number;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, i + 1];
    scale *= 128;
  }
  return undefined;
}

/**
 * The first top-level field `field` of wire type `wireType` (0, varint, or 2, length-delimited)
 * of the message in bytes [from, to); undefined when it has none, 'unparsable' when the bytes
 * before it do not parse (callers then leave the bytes as they are: the readability check
 * reports what no client could decode). Bytes after the field are not read: a record's head is
 * enough for its status.
 */
function findField(
  bytes: Uint8Array,
  from: number,
  to: number,
  field: number,
  wireType: 0 | 2 = 2,
): FieldSpan | undefined | 'unparsable' {
  let at = from;
  while (at < to) {
    const tagStart = at;
    const tag = readVarint(bytes, at, to);
    if (tag === undefined) return 'unparsable';
    at = tag[1];
    const type = tag[0] % 8;
    const wanted = Math.floor(tag[0] / 8) === field && type === wireType;
    if (type === 0) {
      const value = readVarint(bytes, at, to);
      if (value === undefined) return 'unparsable';
      if (wanted) return { tagStart, start: at, end: value[1], varint: value[0] };
      at = value[1];
    } else if (type === 1) {
      at += 8;
    } else if (type === 5) {
      at += 4;
    } else if (type === 2) {
      const length = readVarint(bytes, at, to);
      if (length === undefined || length[1] + length[0] > to) return 'unparsable';
      if (wanted) return { tagStart, start: length[1], end: length[1] + length[0] };
      at = length[1] + length[0];
    } else {
      return 'unparsable'; // groups: never written by this service
    }
  }
  return at === to ? undefined : 'unparsable';
}

/** The field's span, or undefined when it is absent or the bytes do not parse. */
function spanOf(bytes: Uint8Array, from: number, to: number, field: number): FieldSpan | undefined {
  const span = findField(bytes, from, to, field);
  return span === 'unparsable' ? undefined : span;
}

/** `Evaluation.status` (field 2, a varint) of an encoded Evaluation, without decoding the rest; 0 when absent. */
export function statusOfEvaluation(evaluation: Uint8Array): number {
  const span = findField(evaluation, 0, evaluation.length, STATUS_FIELD, 0);
  return span === undefined || span === 'unparsable' ? 0 : (span.varint ?? 0);
}

/**
 * `Evaluation.tenant_id` of an encoded Evaluation, without decoding the rest (every field is
 * skipped by its length): DEFAULT_TENANT when absent (a state folded before tenants existed),
 * undefined when the bytes do not parse.
 */
export function tenantOfEvaluation(evaluation: Uint8Array, from = 0, to = evaluation.length): string | undefined {
  const span = findField(evaluation, from, to, TENANT_FIELD);
  if (span === 'unparsable') return undefined;
  return tenantOrDefault(
    span === undefined
      ? undefined
      : Buffer.from(evaluation.buffer, evaluation.byteOffset + span.start, span.end - span.start).toString('utf8'),
  );
}

/** The tenant of an encoded EvaluationUpdate's state (see tenantOfEvaluation). */
export function tenantOfUpdate(update: Uint8Array): string | undefined {
  const state = spanOf(update, 0, update.length, EVALUATION_FIELD);
  return state === undefined ? undefined : tenantOfEvaluation(update, state.start, state.end);
}

/**
 * The encoded `google.protobuf.Struct` of an encoded Evaluation (a record); null without one,
 * undefined when the bytes do not parse (the metadata is then unknown, not absent).
 */
export function metadataOfEvaluation(evaluation: Uint8Array): Uint8Array | null | undefined {
  const span = findField(evaluation, 0, evaluation.length, METADATA_FIELD);
  if (span === 'unparsable') return undefined;
  return span === undefined ? null : evaluation.subarray(span.start, span.end);
}

/**
 * The metadata of an encoded EvaluationUpdate's state: its Struct's bytes, or undefined when
 * the state carries none (it had none, or it was stored without: read-models/stored-update.ts).
 */
export function metadataOfUpdate(update: Uint8Array): Uint8Array | undefined {
  const state = spanOf(update, 0, update.length, EVALUATION_FIELD);
  if (state === undefined) return undefined;
  const span = spanOf(update, state.start, state.end, METADATA_FIELD);
  return span === undefined ? undefined : update.subarray(span.start, span.end);
}

/**
 * The update with `metadata` (a Struct's bytes, possibly none: an empty Struct) put into its
 * state, when the state has none: one copy of the update, the metadata field appended to the
 * state's fields (decoders take fields in any order). Returned as it is when the state carries
 * metadata already, or the bytes do not parse.
 */
export function withMetadata(update: Uint8Array, metadata: Uint8Array): Uint8Array {
  const state = spanOf(update, 0, update.length, EVALUATION_FIELD);
  if (state === undefined || findField(update, state.start, state.end, METADATA_FIELD) !== undefined) return update;
  const field = METADATA_TAG.length + varintSize(metadata.length) + metadata.length;
  const stateLength = state.end - state.start + field;
  const tagEnd = state.tagStart + 1; // field 1's tag is one byte
  const out = Buffer.allocUnsafe(tagEnd + varintSize(stateLength) + stateLength + (update.length - state.end));
  out.set(update.subarray(0, tagEnd), 0);
  let at = writeVarintAt(out, tagEnd, stateLength);
  out.set(update.subarray(state.start, state.end), at);
  at += state.end - state.start;
  out[at++] = METADATA_TAG[0];
  out[at++] = METADATA_TAG[1];
  at = writeVarintAt(out, at, metadata.length);
  out.set(metadata, at);
  at += metadata.length;
  out.set(update.subarray(state.end), at);
  return out;
}
