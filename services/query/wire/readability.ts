import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isUtf8 } from 'node:buffer';
import { createFileRegistry, fromBinary, ScalarType, type DescField, type DescMessage } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';

/**
 * Message levels at which standard protobuf decoders stop, counting the outermost message
 * (ts-proto's count, the strictest: C++, Java and Python upb allow 100 below the outermost).
 */
export const DECODER_DEPTH_LIMIT = 100;

/**
 * Whether bytes the read models hold would decode in a standard client, checked by walking the
 * wire format against the descriptors `npm run generate` writes (so a proto change needs no
 * change here), without building the message: a full ts-proto decode of an update with 64 KiB
 * of metadata costs a millisecond or more, and the live tail checks every change it reads.
 *
 * It refuses what any of ts-proto, C++ or Python would: a varint, length or field that runs
 * past its message (every nested message is bounded by its own length, as C++ bounds it),
 * nesting past {@link DECODER_DEPTH_LIMIT} levels inside the response that carries the
 * message, a string that is not UTF-8 (proto3 strings; C++ and Python refuse them), field
 * number 0, wire types 6 and 7, and groups, which no version of this service writes.
 */
export interface ReadabilityCheck {
  /** Why a client could not decode `bytes` inside its response, or undefined when it could. */
  (bytes: Uint8Array): string | undefined;
}

/**
 * The check for a message of `typeName` sent `envelopeLevels` messages deep in a response
 * (1: the field of a GetEvaluationResponse or a WatchEvaluationsResponse).
 */
export function readabilityCheck(typeName: string, envelopeLevels: number): ReadabilityCheck {
  let shape: MessageShape | undefined;
  return (bytes) => {
    shape ??= shapeNamed(typeName);
    const walked = walkOrReason(bytes, shape, envelopeLevels + 1);
    return typeof walked === 'string' ? walked : undefined;
  };
}

/**
 * How many message levels `bytes` (a `typeName`) nest, itself counted 1; throws when they would
 * not decode. For tests and figures (the deepest response, README "Metadata").
 */
export function nestingLevels(typeName: string, bytes: Uint8Array): number {
  const walked = walkOrReason(bytes, shapeNamed(typeName), 1);
  if (typeof walked === 'string') throw new Error(walked);
  return walked;
}

/** An update as WatchEvaluation(s)Response carries it (field 1). */
export const updateInResponse = readabilityCheck('crucible.storage.v1.EvaluationUpdate', 1);

/** A record as GetEvaluationResponse and ListEvaluationsResponse carry it (field 1). */
export const evaluationInResponse = readabilityCheck('crucible.storage.v1.Evaluation', 1);

/** What the walk needs of a message: the fields that hold a nested message, or a string. */
interface MessageShape {
  /** By field number (an array: field numbers here are small, and a lookup is most of the walk). */
  readonly fields: (MessageShape | 'string' | undefined)[];
}

let shapes: Map<string, MessageShape> | undefined;
let registry: ReturnType<typeof createFileRegistry> | undefined;

function shapeNamed(typeName: string): MessageShape {
  // The same descriptor set reflection serves (shared/grpc/server.ts), read once, on first use.
  registry ??= createFileRegistry(
    fromBinary(
      FileDescriptorSetSchema,
      readFileSync(join(__dirname, '..', '..', '..', '..', 'shared', 'generated', 'crucible.binpb')),
    ),
  );
  const message = registry.getMessage(typeName);
  if (message === undefined) throw new Error(`${typeName} is not in crucible.binpb`);
  return shapeOf(message);
}

function shapeOf(message: DescMessage): MessageShape {
  shapes ??= new Map();
  const known = shapes.get(message.typeName);
  if (known !== undefined) return known;
  // Registered before its fields: Struct, Value and ListValue hold one another.
  const shape: MessageShape = { fields: [] };
  shapes.set(message.typeName, shape);
  for (const field of message.fields) {
    const part = partOf(field);
    if (part !== undefined) shape.fields[field.number] = part;
  }
  return shape;
}

function partOf(field: DescField): MessageShape | 'string' | undefined {
  switch (field.fieldKind) {
    case 'message':
      return shapeOf(field.message);
    case 'scalar':
      return field.scalar === ScalarType.STRING ? 'string' : undefined;
    case 'list':
      if (field.listKind === 'message') return shapeOf(field.message);
      return field.listKind === 'scalar' && field.scalar === ScalarType.STRING ? 'string' : undefined;
    case 'map': {
      // On the wire each entry is a message of its own (key = 1, value = 2): one more level.
      const entry: MessageShape = { fields: [] };
      if (field.mapKey === ScalarType.STRING) entry.fields[1] = 'string';
      if (field.mapKind === 'message') entry.fields[2] = shapeOf(field.message);
      else if (field.mapKind === 'scalar' && field.scalar === ScalarType.STRING) entry.fields[2] = 'string';
      return entry;
    }
    case 'enum':
      return undefined;
  }
}

/** Why the walk in progress stopped (set with its -1 answer; the walk is synchronous). */
let failure = '';

function fail(reason: string): -1 {
  failure = reason;
  return -1;
}

function walkOrReason(bytes: Uint8Array, shape: MessageShape, level: number): number | string {
  failure = '';
  const deepest = walk(bytes, 0, bytes.length, shape, level);
  return deepest === -1 ? failure : deepest;
}

/** Reads the varint at `at` into `varint.value` (exact up to 2^53: tags and lengths are far below); the position after it, or -1 past `end` or 10 bytes. */
const varint = { value: 0 };
function readVarint(bytes: Uint8Array, at: number, end: number): number {
  const first = bytes[at] as number;
  if (at < end && first < 0x80) {
    varint.value = first;
    return at + 1;
  }
  let value = 0;
  let scale = 1;
  for (let i = at; i < end && i < at + 10; i += 1) {
    const byte = bytes[i] as number;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      varint.value = value;
      return i + 1;
    }
    scale *= 128;
  }
  return -1;
}

/** Whether `bytes[start, end)` is UTF-8: ASCII in a loop (most strings here), the rest natively. */
function utf8(bytes: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i += 1) {
    // What precedes i is ASCII, so a character starts at i.
    if ((bytes[i] as number) >= 0x80) return isUtf8(bytes.subarray(i, end));
  }
  return true;
}

/**
 * Walks the message in `bytes[start, end)` at nesting `level`: the deepest level reached, or -1
 * with the reason in `failure`. Recursive, bounded by DECODER_DEPTH_LIMIT.
 */
function walk(bytes: Uint8Array, start: number, end: number, shape: MessageShape, level: number): number {
  if (level > DECODER_DEPTH_LIMIT) {
    return fail(`messages nest deeper than ${DECODER_DEPTH_LIMIT} levels in the response (at byte ${start})`);
  }
  let deepest = level;
  let at = start;
  while (at < end) {
    const tagAt = at;
    at = readVarint(bytes, at, end);
    if (at === -1) return fail(`the field tag at byte ${tagAt} runs past its message`);
    const field = Math.floor(varint.value / 8);
    const wireType = varint.value % 8;
    if (field === 0) return fail(`byte ${tagAt}: there is no field 0`);
    if (wireType === 0) {
      at = readVarint(bytes, at, end);
      if (at === -1) return fail(`field ${field} at byte ${tagAt}: its varint runs past its message`);
    } else if (wireType === 2) {
      at = readVarint(bytes, at, end);
      if (at === -1) return fail(`field ${field} at byte ${tagAt}: its length runs past its message`);
      const length = varint.value;
      if (length > end - at) return fail(`field ${field} at byte ${tagAt}: its ${length} bytes run past its message`);
      const part = field < shape.fields.length ? shape.fields[field] : undefined;
      if (part === 'string') {
        if (!utf8(bytes, at, at + length)) return fail(`field ${field} at byte ${tagAt}: a string that is not UTF-8`);
      } else if (part !== undefined) {
        const nested = walk(bytes, at, at + length, part, level + 1);
        if (nested === -1) return -1;
        if (nested > deepest) deepest = nested;
      }
      at += length;
    } else if (wireType === 1 || wireType === 5) {
      at += wireType === 1 ? 8 : 4;
      if (at > end) return fail(`field ${field} at byte ${tagAt}: its fixed-size value runs past its message`);
    } else {
      const what = wireType === 3 || wireType === 4 ? 'a group' : 'no such type';
      return fail(`field ${field} at byte ${tagAt}: wire type ${wireType} (${what})`);
    }
  }
  return deepest;
}
