import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createFileRegistry,
  fromBinary,
  ScalarType,
  type DescEnum,
  type DescField,
  type DescMessage,
  type DescOneof,
} from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { expect } from 'chai';
import { EVENT_TYPE_TO_PROTO, type EvaluationEvent, type RecordedEvent } from '../../../shared/domain';
import * as evaluationMessages from '../../../shared/generated/crucible/storage/v1/evaluation';
import { Evaluation, EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import * as queryMessages from '../../../shared/generated/crucible/storage/v1/query_service';
import { ReadOutputResponse } from '../../../shared/generated/crucible/storage/v1/query_service';
import { Struct } from '../../../shared/generated/google/protobuf/struct';
import { UpdateEncoder } from '../../../services/query/read-models/update-encoding';
import { fromBytes } from '../../../services/query/wire/encoded';
import {
  allocateReadOutputChunk,
  EvaluationQueryServiceWire,
  serializeReadOutput,
} from '../../../services/query/wire/encoded-messages';

/*
 * The query side writes some messages with hand-written encoders (hard-coded tags, for speed).
 * A field added to the protos would be dropped by them without a sound, so this file builds a
 * sample with EVERY field set from the descriptors `npm run generate` writes next to the ts-proto
 * code, and checks each hand-written encoder against ts-proto for it.
 */

const PACKAGE = 'crucible.storage.v1';
const ROOT = join(__dirname, '..', '..', '..', '..');
const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(join(ROOT, 'shared', 'generated', 'crucible.binpb'))),
);

function messageNamed(typeName: string): DescMessage {
  const message = registry.getMessage(typeName);
  if (message === undefined) throw new Error(`${typeName} is not in crucible.binpb`);
  return message;
}

/** The kinds of value a google.protobuf.Struct holds (its `kind` oneof); a sample holds each. */
const VALUE = messageNamed('google.protobuf.Value');

/** A ts-proto message as a plain object: property name to value. */
type Sample = Record<string, unknown>;

/** What the tests need of a ts-proto message's functions. */
interface Codec {
  encode(message: object): { finish(): Uint8Array };
  decode(input: Uint8Array): object;
  create(): object;
}

const CODECS: Record<string, unknown> = { ...evaluationMessages, ...queryMessages };

/** ts-proto's functions for a crucible message (it names a nested message Outer_Inner). */
function codecOf(message: DescMessage): Codec {
  const name = message.typeName.slice(PACKAGE.length + 1).replace(/\./g, '_');
  const codec = CODECS[name];
  if (typeof codec !== 'object' || codec === null || !('encode' in codec)) {
    throw new Error(`${message.typeName}: no ts-proto message ${name} (shared/generated out of date?)`);
  }
  return codec as Codec;
}

/** The property ts-proto gives a field (its snakeToCamel; checked against its messages in sampleOf). */
function tsProtoName(field: DescField): string {
  if (!field.name.includes('_')) return field.name;
  const hasLowerCase = /[a-z]/.test(field.name);
  return field.name
    .split('_')
    .map((word, i) => {
      const w = hasLowerCase ? word : word.toLowerCase();
      return i === 0 ? w : w.charAt(0).toUpperCase() + w.slice(1);
    })
    .join('');
}

/** Field paths name the proto field, as the .proto file a drift starts in spells it. */
function pathOf(field: DescField): string {
  return `${field.parent.name}.${field.name}`;
}

/** What one value of a field is (the element type, for a repeated field). */
type ValueKind =
  | { readonly kind: 'scalar'; readonly scalar: ScalarType }
  | { readonly kind: 'enum'; readonly enum: DescEnum }
  | { readonly kind: 'message'; readonly message: DescMessage };

function valueKindOf(field: DescField): ValueKind {
  switch (field.fieldKind) {
    case 'scalar':
      return { kind: 'scalar', scalar: field.scalar };
    case 'enum':
      return { kind: 'enum', enum: field.enum };
    case 'message':
      return { kind: 'message', message: field.message };
    case 'list':
      if (field.listKind === 'scalar') return { kind: 'scalar', scalar: field.scalar };
      if (field.listKind === 'enum') return { kind: 'enum', enum: field.enum };
      return { kind: 'message', message: field.message };
    case 'map':
      // ts-proto makes a map a plain object; its values are sampled and checked as a list's are.
      if (field.mapKey !== ScalarType.STRING)
        throw new Error(`${pathOf(field)}: no sample for a map with non-string keys`);
      if (field.mapKind === 'scalar') return { kind: 'scalar', scalar: field.scalar };
      if (field.mapKind === 'enum') return { kind: 'enum', enum: field.enum };
      return { kind: 'message', message: field.message };
    default: {
      const unknown = field as DescField;
      throw new Error(
        `${pathOf(unknown)}: no sample for a ${unknown.fieldKind} field (how does ts-proto represent it?)`,
      );
    }
  }
}

/** The project's own messages: samples recurse into them (well-known types have a sample each). */
function isCrucible(message: DescMessage): boolean {
  return message.file.proto.package === PACKAGE;
}

/** The crucible messages a value of `root` can hold, `root` included. */
function reachableFrom(root: DescMessage, found = new Set<DescMessage>()): Set<DescMessage> {
  if (found.has(root) || !isCrucible(root)) return found;
  found.add(root);
  for (const field of root.fields) {
    const kind = valueKindOf(field);
    if (kind.kind === 'message') reachableFrom(kind.message, found);
  }
  return found;
}

/** Sample variants enough for every case of every oneof below `root` to be set in one of them. */
function variantsOf(root: DescMessage): number[] {
  const cases = [...reachableFrom(root)].flatMap((m) => m.oneofs.map((oneof) => oneof.fields.length));
  return Array.from({ length: Math.max(1, ...cases) }, (_, i) => i);
}

function caseOf(oneof: DescOneof, variant: number): DescField {
  return oneof.fields[variant % oneof.fields.length]!;
}

/** Hands out distinct numbers and enum values, so no two fields of a sample hold the same value. */
class Distinct {
  private n = 0;
  private readonly enumValuesUsed = new Set<number>();

  next(): number {
    this.n += 1;
    return this.n;
  }

  /** A non-zero value of `type`, one no other enum field has yet while there is one. */
  enumValue(type: DescEnum, path: string): number {
    const values = type.values.map((v) => v.number).filter((v) => v !== 0);
    if (values.length === 0) throw new Error(`${path}: ${type.typeName} has no value but 0`);
    const value = values.find((v) => !this.enumValuesUsed.has(v)) ?? values[this.next() % values.length]!;
    this.enumValuesUsed.add(value);
    return value;
  }
}

/**
 * A ts-proto-shaped `message` with every field set to a value of its own; in each oneof the case
 * `variant` picks, the other cases undefined (as ts-proto decodes them). Throws, naming the field,
 * for a kind of field it cannot fill, so that a new kind cannot slip past the checks below.
 */
function sampleOf(message: DescMessage, variant = 0, distinct = new Distinct()): Sample {
  const sample: Sample = {};
  for (const field of message.fields) {
    const set = field.oneof === undefined || caseOf(field.oneof, variant) === field;
    const kind = valueKindOf(field);
    const one = (): unknown => sampleValue(kind, field, variant, distinct);
    // Two different elements in a list, so that both its order and its length count.
    sample[tsProtoName(field)] = !set
      ? undefined
      : field.fieldKind === 'list'
        ? [one(), one()]
        : field.fieldKind === 'map'
          ? { [`${field.name}#${distinct.next()}`]: one(), [`${field.name}#${distinct.next()}`]: one() }
          : one();
  }
  // The same properties as ts-proto's own message, or the descriptors and the generated code disagree.
  expect(Object.keys(sample), `${message.typeName}: descriptor fields vs ts-proto properties`).to.have.members(
    Object.keys(codecOf(message).create()),
  );
  return sample;
}

function sampleValue(kind: ValueKind, field: DescField, variant: number, distinct: Distinct): unknown {
  switch (kind.kind) {
    case 'scalar':
      return sampleScalar(kind.scalar, field, distinct.next());
    case 'enum':
      return distinct.enumValue(kind.enum, pathOf(field));
    case 'message':
      return sampleMessageValue(kind.message, field, variant, distinct);
  }
}

/** A scalar as ts-proto holds it here (forceLong=string, env=node: 64-bit as decimal strings, bytes as Buffer). */
function sampleScalar(scalar: ScalarType, field: DescField, n: number): unknown {
  switch (scalar) {
    case ScalarType.STRING:
      return `${field.name}#${n}`;
    case ScalarType.BYTES:
      return Buffer.from(`${field.name}#${n}`);
    case ScalarType.BOOL:
      return true;
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return 300 + n; // two varint bytes
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return String(2 ** 40 + n); // above 32 bits, within the 2^53 UpdateEncoder writes itself
    case ScalarType.DOUBLE:
      return n + 0.25;
    case ScalarType.FLOAT:
      return n + 0.5; // exact in 32 bits
    default:
      throw new Error(`${pathOf(field)}: no sample for scalar type ${String(scalar)}`);
  }
}

/** ts-proto makes a Timestamp a Date and a Struct a plain object; crucible messages are samples in turn. */
function sampleMessageValue(message: DescMessage, field: DescField, variant: number, distinct: Distinct): unknown {
  if (message.typeName === 'google.protobuf.Timestamp') {
    // Whole days plus n ms (n < 1000): both the seconds and the nanos are set.
    const n = distinct.next();
    return new Date(Date.UTC(2026, 0, 1) + n * 86_400_000 + n);
  }
  if (message.typeName === 'google.protobuf.Struct') return sampleStruct(distinct);
  if (isCrucible(message)) return sampleOf(message, variant, distinct);
  throw new Error(`${pathOf(field)}: no sample for ${message.typeName} (how does ts-proto represent it?)`);
}

/** One entry per kind of google.protobuf.Value. */
function sampleStruct(distinct: Distinct): Sample {
  const struct: Sample = {};
  for (const kind of VALUE.fields) {
    const n = distinct.next();
    struct[`${kind.name}#${n}`] = sampleJsonValue(kind.name, n);
  }
  return struct;
}

function sampleJsonValue(kind: string, n: number): unknown {
  switch (kind) {
    case 'null_value':
      return null;
    case 'number_value':
      return n + 0.125;
    case 'string_value':
      return `string#${n}`;
    case 'bool_value':
      return true;
    case 'struct_value':
      return { [`inner#${n}`]: `struct#${n}` };
    case 'list_value':
      return [n, `list#${n}`];
    default:
      throw new Error(`google.protobuf.Value.${kind}: no sample for this kind of value`);
  }
}

/** The google.protobuf.Value case a JS value is (as Struct.wrap picks it). */
function valueCaseOf(value: unknown): string {
  if (value === null) return 'null_value';
  if (Array.isArray(value)) return 'list_value';
  switch (typeof value) {
    case 'number':
      return 'number_value';
    case 'string':
      return 'string_value';
    case 'boolean':
      return 'bool_value';
    case 'object':
      return 'struct_value';
    default:
      return typeof value;
  }
}

/**
 * Asserts that every field of `value` (a decoded `message`) is set, not at its default, and
 * records each field it checked in `covered`. An unset oneof case is skipped: another variant
 * sets it, and {@link expectAllCovered} checks that one did.
 */
function expectEveryFieldSet(message: DescMessage, value: unknown, covered: Set<string>): void {
  expect(value, message.typeName).to.be.an('object');
  for (const field of message.fields) {
    const path = pathOf(field);
    const fieldValue = (value as Sample)[tsProtoName(field)];
    if (field.oneof !== undefined && fieldValue === undefined) continue;
    const kind = valueKindOf(field);
    if (field.fieldKind === 'list') {
      expect(fieldValue, path).to.be.an('array');
      expect((fieldValue as unknown[]).length, path).to.be.above(0);
      for (const element of fieldValue as unknown[]) expectValueSet(kind, element, path, covered);
    } else if (field.fieldKind === 'map') {
      expect(fieldValue, path).to.be.an('object');
      expect(Object.keys(fieldValue as object).length, path).to.be.above(0);
      for (const element of Object.values(fieldValue as object)) expectValueSet(kind, element, path, covered);
    } else {
      expectValueSet(kind, fieldValue, path, covered);
    }
    covered.add(path);
  }
}

function expectValueSet(kind: ValueKind, value: unknown, path: string, covered: Set<string>): void {
  switch (kind.kind) {
    case 'scalar':
      expect(value, path).to.not.be.oneOf([undefined, '', '0', 0, false]);
      if (value instanceof Uint8Array) expect(value.length, path).to.be.above(0);
      return;
    case 'enum':
      expect(value, path).to.be.a('number').and.not.equal(0);
      return;
    case 'message':
      if (kind.message.typeName === 'google.protobuf.Timestamp') {
        expect(value, path).to.be.instanceOf(Date);
        const ms = (value as Date).getTime();
        expect(Math.trunc(ms / 1000), `${path}.seconds`).to.not.equal(0);
        expect(ms % 1000, `${path}.nanos`).to.not.equal(0);
      } else if (kind.message.typeName === 'google.protobuf.Struct') {
        expect(value, path).to.be.an('object');
        const cases = new Set(Object.values(value as Sample).map(valueCaseOf));
        for (const valueKind of VALUE.fields) {
          expect(cases.has(valueKind.name), `${path} holds a ${valueKind.name}`).to.equal(true);
        }
      } else {
        expectEveryFieldSet(kind.message, value, covered);
      }
  }
}

/**
 * Asserts that `decoded` is `sample` with every field set: field by field first (so that a
 * failure names the field), then as a whole (so that nothing else is there).
 */
function expectDecodedSample(message: DescMessage, decoded: unknown, sample: unknown, covered: Set<string>): void {
  expectEveryFieldSet(message, decoded, covered);
  expectSameFields(message, decoded, sample, message.name);
  expect(decoded, message.name).to.deep.equal(sample);
}

function expectSameFields(message: DescMessage, actual: unknown, expected: unknown, at: string): void {
  for (const field of message.fields) {
    const key = tsProtoName(field);
    const [a, e] = [(actual as Sample)[key], (expected as Sample)[key]];
    const kind = valueKindOf(field);
    const nested = kind.kind === 'message' && isCrucible(kind.message);
    if (nested && field.fieldKind !== 'list' && a !== undefined && e !== undefined) {
      expectSameFields(kind.message, a, e, `${at}.${field.name}`);
    } else {
      expect(a, `${at}.${field.name}`).to.deep.equal(e);
    }
  }
}

/** Asserts that every field of every crucible message below `root` was checked set in some sample. */
function expectAllCovered(root: DescMessage, covered: Set<string>): void {
  for (const message of reachableFrom(root)) {
    for (const field of message.fields) {
      expect(covered.has(pathOf(field)), `${pathOf(field)} set in a sample`).to.equal(true);
    }
  }
}

/** Bytes as hex, so that a mismatch shows where the two encodings part. */
function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

const AT = '2026-01-01T00:00:00.000Z';
const NO_BODY = { previewBase64: '', size: 0, location: '' } as const;

/** One event of each type: append takes the update's event type from the event (and the state apart). */
const EVENTS: readonly EvaluationEvent[] = [
  {
    type: 'EvaluationQueued',
    data: {
      codeHash: 'h',
      codeSize: 1,
      language: 'python',
      engine: 'docker',
      timeoutSeconds: 5,
      metadata: {},
      createdAt: AT,
    },
  },
  { type: 'EvaluationStarted', data: { executorId: 'x', containerId: 'c', startedAt: AT } },
  { type: 'EvaluationCompleted', data: { exitCode: 0, completedAt: AT, output: NO_BODY } },
  { type: 'EvaluationFailed', data: { exitCode: 1, reason: 'error', completedAt: AT, error: NO_BODY } },
  { type: 'EvaluationCancelled', data: { reason: 'r', cancelledAt: AT } },
  { type: 'EvaluationMetricsRecorded', data: { points: 0, metrics: [] } },
  { type: 'EvaluationContainerCreated', data: { containerId: 'c', image: 'i', limits: {}, occurredAt: AT } },
  {
    type: 'EvaluationSecurityViolation',
    data: { containerId: 'c', violationType: 'cpu', severity: 'low', actionTaken: '', details: {}, occurredAt: AT },
  },
];

/** The recorded event UpdateEncoder.append takes for `update`: its type, revision and position. */
function eventFor(update: EvaluationUpdate): RecordedEvent {
  const event = EVENTS.find((e) => EVENT_TYPE_TO_PROTO[e.type] === update.eventType);
  if (event === undefined) throw new Error(`no domain event has the EventType ${update.eventType}`);
  const evalId = update.evaluation?.evalId ?? '';
  return { position: update.position, revision: update.revision, evalId, recordedAt: AT, event };
}

/**
 * Runs `fn` and asserts that ts-proto's Evaluation and Struct encoders were not called: for
 * values its own path does not cover UpdateEncoder falls back to them, and a sample that took
 * that path would only compare ts-proto with itself.
 */
function withoutTsProtoFallback<T>(fn: () => T): T {
  const { encode: encodeEvaluation } = Evaluation;
  const { encode: encodeStruct } = Struct;
  let calls = 0;
  Evaluation.encode = (message, writer) => {
    calls += 1;
    return encodeEvaluation(message, writer);
  };
  Struct.encode = (message, writer) => {
    calls += 1;
    return encodeStruct(message, writer);
  };
  try {
    const result = fn();
    expect(calls, 'calls of ts-proto encoders: the sample must take the hand-written path').to.equal(0);
    return result;
  } finally {
    Evaluation.encode = encodeEvaluation;
    Struct.encode = encodeStruct;
  }
}

/** The messages the read models hold encoded, and the handlers answer with as Encoded (wire/encoded.ts). */
const STORED_ENCODED = new Set([`${PACKAGE}.Evaluation`, `${PACKAGE}.EvaluationUpdate`]);

/**
 * `value` as the handlers answer it: each nested Evaluation and EvaluationUpdate as an Encoded
 * read from its stored bytes, so that the wire writes those bytes, not an encoding. Undefined
 * when the response holds none (its serializer takes ts-proto's message as it is).
 */
function asStored(message: DescMessage, value: Sample): Sample | undefined {
  const copy: Sample = { ...value };
  let stored = false;
  for (const field of message.fields) {
    const kind = valueKindOf(field);
    if (kind.kind !== 'message' || !STORED_ENCODED.has(kind.message.typeName)) continue;
    const codec = codecOf(kind.message);
    const store = (part: unknown): unknown =>
      part === undefined ? undefined : fromBytes(codec, codec.encode(part as object).finish());
    const key = tsProtoName(field);
    if (value[key] === undefined) continue;
    copy[key] = field.fieldKind === 'list' ? (value[key] as unknown[]).map(store) : store(value[key]);
    stored = true;
  }
  return stored ? copy : undefined;
}

describe('wire fields: hand-written encoders write every field the descriptors have', () => {
  describe('the sample generator', () => {
    it('refuses, naming the field, a kind of field it has no sample for', () => {
      expect(() => sampleOf(messageNamed('google.protobuf.Struct'))).to.throw(
        /Struct\.fields: .*google\.protobuf\.Value/,
      );
      expect(() => sampleOf(messageNamed('google.rpc.Status'))).to.throw(/Status\.details: .*google\.protobuf\.Any/);
    });

    it('gives distinct fields distinct values (so that a swapped tag shows)', () => {
      const evaluation = sampleOf(messageNamed(`${PACKAGE}.Evaluation`));
      const values = Object.values(evaluation).map((v) => (v instanceof Date ? v.getTime() : JSON.stringify(v)));
      expect(new Set(values).size, 'distinct values among Evaluation’s fields').to.equal(values.length);
    });
  });

  describe('UpdateEncoder (read-model records, history and change-log entries)', () => {
    const UPDATE = messageNamed(`${PACKAGE}.EvaluationUpdate`);
    const EVALUATION = messageNamed(`${PACKAGE}.Evaluation`);

    /** Appends a sample update after another entry (so that its offsets are not 0). */
    function appended(variant: number): { update: EvaluationUpdate; bytes: Buffer; record: Buffer } {
      const update = sampleOf(UPDATE, variant) as unknown as EvaluationUpdate;
      const state = update.evaluation!;
      const encoder = new UpdateEncoder(16); // grows: the sample is larger
      encoder.append(eventFor(update), { ...state, evalId: 'before' });
      const at = withoutTsProtoFallback(() => encoder.append(eventFor(update), state));
      const buffer = encoder.finish();
      return { update, bytes: buffer.subarray(at.start, at.end), record: buffer.subarray(at.stateStart, at.stateEnd) };
    }

    it('writes an EvaluationUpdate that decodes to the sample, every field set, byte for byte as ts-proto', () => {
      const covered = new Set<string>();
      for (const variant of variantsOf(UPDATE)) {
        const { update, bytes } = appended(variant);
        expectDecodedSample(UPDATE, EvaluationUpdate.decode(bytes), update, covered);
        expect(hex(bytes), 'the update, byte for byte').to.equal(hex(EvaluationUpdate.encode(update).finish()));
      }
      expectAllCovered(UPDATE, covered);
    });

    it('writes the state (the record) in the span append returns, byte for byte as Evaluation.encode', () => {
      const covered = new Set<string>();
      for (const variant of variantsOf(EVALUATION)) {
        const { update, record } = appended(variant);
        expectDecodedSample(EVALUATION, Evaluation.decode(record), update.evaluation, covered);
        expect(hex(record), 'the record, byte for byte').to.equal(hex(Evaluation.encode(update.evaluation!).finish()));
      }
      expectAllCovered(EVALUATION, covered);
    });
  });

  describe('serializeReadOutput', () => {
    const RESPONSE = messageNamed(`${PACKAGE}.ReadOutputResponse`);

    it('writes every field of ReadOutputResponse byte for byte as ts-proto', () => {
      const covered = new Set<string>();
      for (const variant of variantsOf(RESPONSE)) {
        const response = sampleOf(RESPONSE, variant) as unknown as ReadOutputResponse;
        const wire = serializeReadOutput(response);
        expectDecodedSample(RESPONSE, ReadOutputResponse.decode(wire), response, covered);
        expect(hex(wire)).to.equal(hex(ReadOutputResponse.encode(response).finish()));
      }
      expectAllCovered(RESPONSE, covered);
    });

    it('writes every field in front of a chunk with headroom too', () => {
      const covered = new Set<string>();
      for (const variant of variantsOf(RESPONSE)) {
        const response = sampleOf(RESPONSE, variant) as unknown as ReadOutputResponse;
        const chunk = allocateReadOutputChunk(response.chunk.length);
        response.chunk.copy(chunk);
        const wire = serializeReadOutput({ ...response, chunk });
        expect(wire.buffer, 'written in the chunk’s own memory').to.equal(chunk.buffer);
        // Here the numbers come before the chunk, unlike ts-proto's order: compare what it decodes to.
        expectDecodedSample(RESPONSE, ReadOutputResponse.decode(wire), response, covered);
      }
      expectAllCovered(RESPONSE, covered);
    });
  });

  describe('EvaluationQueryServiceWire', () => {
    const service = registry.getService(`${PACKAGE}.EvaluationQueryService`)!;

    it('serialises every response, each oneof case, byte for byte as ts-proto, stored messages from their bytes', () => {
      const definitions = Object.values(EvaluationQueryServiceWire);
      expect(definitions.map((d) => d.path)).to.have.members(
        service.methods.map((m) => `/${service.typeName}/${m.name}`),
      );
      for (const method of service.methods) {
        const definition = definitions.find((d) => d.path === `/${service.typeName}/${method.name}`)!;
        const serialize = definition.responseSerialize as (value: object) => Buffer;
        const codec = codecOf(method.output);
        const covered = new Set<string>();
        for (const variant of variantsOf(method.output)) {
          const response = sampleOf(method.output, variant);
          const expected = hex(codec.encode(response).finish());
          // A marker of a watch stream (no update) goes out as ts-proto's message; an update as stored bytes.
          const stored = asStored(method.output, response);
          const wire = serialize(stored ?? response);
          const label = `${method.name} (${method.output.name}, variant ${variant}, ${stored ? 'stored' : 'fresh'})`;
          expectDecodedSample(method.output, codec.decode(wire), response, covered);
          expect(hex(wire), label).to.equal(expected);
        }
        expectAllCovered(method.output, covered);
      }
    });
  });
});
