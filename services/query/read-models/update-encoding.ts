import type { RecordedEvent } from '../../../shared/domain';
import { EVENT_TYPE_TO_PROTO } from '../../../shared/domain';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { Struct } from '../../../shared/generated/google/protobuf/struct';
import { Evaluation, EventType, MetricSummary } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { varintSize, writeVarintAt } from '../wire/varint';

/**
 * `EvaluationUpdate.encode({ evaluation: state, eventType, revision, position })` — what ts-proto
 * writes, byte for byte — appended to one growing buffer, for the projection's hot loop (a
 * rebuild encodes a state per event). ts-proto's writer parses every int64 string into a BigInt,
 * builds a Timestamp object per date and a Struct per metadata, and forks a chunk list per
 * nested message; here numbers go straight to varints, a metadata object is encoded once (it is
 * the same object in every state evolve derives from the first), and the nested state is written
 * in place behind a guessed length prefix. Values this path does not cover (negative numbers,
 * int64 strings that are not plain decimals up to 2^53, dates before 1970, invalid dates) make
 * the whole state go through ts-proto's encoder instead.
 */
export class UpdateEncoder {
  private buf: Buffer;
  private pos = 0;
  private readonly metadataBytes = new WeakMap<object, Uint8Array>();

  constructor(initialSize = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  /** Bytes written since the last reset. Views into it stay valid until the next reset. */
  get length(): number {
    return this.pos;
  }

  /** Starts a new buffer (views handed out before keep the old one). */
  reset(): void {
    if (this.pos > 0) this.buf = Buffer.allocUnsafe(this.buf.length);
    this.pos = 0;
  }

  /** The bytes written since the last reset (a view, no copy). */
  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  /**
   * Appends the encoded update and returns where it is: the update is [start, end), the state
   * it embeds [stateStart, end of state). Offsets into finish(). Without `withMetadata` the
   * state is written without its metadata (a stored update that is not the evaluation's first:
   * read-models/stored-update.ts); with it, the state is the record's bytes.
   */
  append(
    event: RecordedEvent,
    state: Evaluation,
    withMetadata = true,
  ): { start: number; stateStart: number; stateEnd: number; end: number } {
    const start = this.pos;
    const metadata = withMetadata ? this.metadataOf(state) : undefined;
    this.ensure(boundOf(state, metadata) + 64);
    // Field 1, the state, behind a length prefix guessed as 2 bytes (states of 128 B to 16 KiB).
    this.buf[this.pos] = 10;
    const guess = 2;
    const stateStart = start + 1 + guess;
    this.pos = stateStart;
    if (!this.writeState(state, metadata)) {
      const bytes = Evaluation.encode(withMetadata ? state : { ...state, metadata: undefined }).finish();
      this.pos = stateStart;
      this.ensure(bytes.length + 64);
      this.buf.set(bytes, this.pos);
      this.pos += bytes.length;
    }
    let stateEnd = this.pos;
    const length = stateEnd - stateStart;
    const prefix = varintSize(length);
    if (prefix !== guess) {
      this.ensure(prefix - guess);
      this.buf.copyWithin(start + 1 + prefix, stateStart, stateEnd);
      stateEnd += prefix - guess;
      this.pos = stateEnd;
    }
    writeVarintAt(this.buf, start + 1, length);
    const eventType = EVENT_TYPE_TO_PROTO[event.event.type];
    if (eventType !== EventType.EVENT_TYPE_UNSPECIFIED) {
      this.buf[this.pos++] = 16;
      this.varint(eventType);
    }
    if (event.revision !== '0' && !this.int64Field(24, event.revision)) this.slowInt64Field(3, event.revision);
    if (event.position !== '0' && !this.int64Field(32, event.position)) this.slowInt64Field(4, event.position);
    return { start, stateStart: stateStart + prefix - guess, stateEnd, end: this.pos };
  }

  /**
   * Appends `Evaluation.encode(state)` alone (a record, metadata included) and returns where it
   * is: [start, end) of finish().
   */
  appendState(state: Evaluation): { start: number; end: number } {
    const start = this.pos;
    const metadata = this.metadataOf(state);
    this.ensure(boundOf(state, metadata) + 64);
    if (!this.writeState(state, metadata)) {
      const bytes = Evaluation.encode(state).finish();
      this.pos = start;
      this.ensure(bytes.length);
      this.buf.set(bytes, this.pos);
      this.pos += bytes.length;
    }
    return { start, end: this.pos };
  }

  private metadataOf(state: Evaluation): Uint8Array | undefined {
    const metadata: unknown = state.metadata;
    if (metadata === undefined) return undefined;
    if (typeof metadata !== 'object' || metadata === null) return Struct.encode(Struct.wrap(state.metadata)).finish();
    let bytes = this.metadataBytes.get(metadata);
    if (bytes === undefined) {
      bytes = encodeStruct(metadata as Record<string, unknown>);
      this.metadataBytes.set(metadata, bytes);
    }
    return bytes;
  }

  private ensure(extra: number): void {
    if (this.pos + extra <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + extra));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  /** Evaluation.encode's fields, in its order and with its defaults; false when not covered. */
  private writeState(s: Evaluation, metadata: Uint8Array | undefined): boolean {
    if (s.evalId !== '') this.stringField(10, s.evalId);
    if (s.status !== 0 && !this.uint31Field(16, s.status)) return false;
    if (s.codeHash !== '') this.stringField(26, s.codeHash);
    if (s.codeSize !== '0' && !this.int64Field(32, s.codeSize)) return false;
    if (s.language !== '') this.stringField(42, s.language);
    if (s.engine !== '') this.stringField(50, s.engine);
    if (s.timeoutSeconds !== 0 && !this.uint31Field(56, s.timeoutSeconds)) return false;
    if (s.executorId !== '') this.stringField(66, s.executorId);
    if (s.containerId !== '') this.stringField(74, s.containerId);
    if (s.exitCode !== undefined && !this.uint31Field(80, s.exitCode)) return false;
    if (s.createdAt !== undefined && !this.timestampField(90, s.createdAt)) return false;
    if (s.startedAt !== undefined && !this.timestampField(98, s.startedAt)) return false;
    if (s.completedAt !== undefined && !this.timestampField(106, s.completedAt)) return false;
    if (s.runtimeMs !== '0' && !this.int64Field(112, s.runtimeMs)) return false;
    if (s.outputPreview.length !== 0) {
      this.buf[this.pos++] = 122;
      this.varint(s.outputPreview.length);
      this.buf.set(s.outputPreview, this.pos);
      this.pos += s.outputPreview.length;
    }
    if (s.outputSize !== '0' && !this.int64Field(128, s.outputSize)) return false;
    if (s.outputLocation !== '') this.stringField(138, s.outputLocation);
    if (s.errorPreview !== '') this.stringField(146, s.errorPreview);
    if (s.errorSize !== '0' && !this.int64Field(152, s.errorSize)) return false;
    if (s.errorLocation !== '') this.stringField(162, s.errorLocation);
    if (s.failureReason !== 0 && !this.uint31Field(168, s.failureReason)) return false;
    if (s.cancelReason !== '') this.stringField(178, s.cancelReason);
    if (metadata !== undefined) {
      this.varint(186);
      this.varint(metadata.length);
      this.buf.set(metadata, this.pos);
      this.pos += metadata.length;
    }
    if (s.revision !== '0' && !this.int64Field(192, s.revision)) return false;
    if (s.position !== '0' && !this.int64Field(200, s.position)) return false;
    if (s.updatedAt !== undefined && !this.timestampField(210, s.updatedAt)) return false;
    if (s.metrics.length > 0) {
      // Few, small and not on every event: ts-proto's writer, behind the field's tag.
      const writer = new BinaryWriter();
      for (const summary of s.metrics) MetricSummary.encode(summary, writer.uint32(218).fork()).join();
      const bytes = writer.finish();
      this.ensure(bytes.length + 16);
      this.buf.set(bytes, this.pos);
      this.pos += bytes.length;
    }
    if (s.lastEventType !== 0 && !this.uint31Field(224, s.lastEventType)) return false;
    for (const { violationType, count } of s.violations) {
      // Field 29: a ViolationCount of two varints (its length fits one byte).
      if (!isUint31(violationType)) return false;
      const n = plainDecimal(count);
      if (n === undefined) return false;
      const length = (violationType !== 0 ? 1 + varintSize(violationType) : 0) + (n !== 0 ? 1 + varintSize(n) : 0);
      this.ensure(length + 3);
      this.varint(234);
      this.buf[this.pos++] = length;
      if (violationType !== 0) {
        this.buf[this.pos++] = 8;
        this.varint(violationType);
      }
      if (n !== 0) {
        this.buf[this.pos++] = 16;
        this.varint(n);
      }
    }
    if (s.stdoutBytes !== '0' && !this.int64Field(240, s.stdoutBytes)) return false;
    if (s.stderrBytes !== '0' && !this.int64Field(248, s.stderrBytes)) return false;
    if (s.tenantId !== '') this.stringField(258, s.tenantId);
    return true;
  }

  private varint(value: number): void {
    this.pos = writeVarintAt(this.buf, this.pos, value);
  }

  /** An int64 field as ts-proto's writer encodes any value it accepts. */
  private slowInt64Field(field: number, text: string): void {
    const bytes = new BinaryWriter()
      .uint32((field << 3) | 0)
      .int64(text)
      .finish();
    this.ensure(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** An int64 field given as a decimal string (skipped by the caller when "0"). */
  /** A varint field (enum, int32, uint32) whose value is in [0, 2^31); false otherwise. */
  private uint31Field(tag: number, value: number): boolean {
    if (!isUint31(value)) return false;
    this.varint(tag);
    this.varint(value);
    return true;
  }

  private int64Field(tag: number, text: string): boolean {
    const value = plainDecimal(text);
    if (value === undefined) return false;
    this.varint(tag);
    this.varint(value);
    return true;
  }

  private stringField(tag: number, text: string): void {
    this.varint(tag);
    const n = text.length;
    const buf = this.buf;
    if (n < 128) {
      // ASCII (ids, hashes, names) is copied unit by unit behind its one-byte length.
      const at = this.pos + 1;
      let i = 0;
      for (; i < n; i += 1) {
        const c = text.charCodeAt(i);
        if (c >= 0x80) break;
        buf[at + i] = c;
      }
      if (i === n) {
        buf[this.pos] = n;
        this.pos = at + n;
        return;
      }
      if (n < 43) {
        // At most 3 UTF-8 bytes per UTF-16 unit: the length still fits one byte.
        const written = buf.write(text, at, 'utf8');
        buf[this.pos] = written;
        this.pos = at + written;
        return;
      }
    }
    const length = Buffer.byteLength(text, 'utf8');
    this.varint(length);
    this.pos += this.buf.write(text, this.pos, 'utf8');
  }

  /** google.protobuf.Timestamp as ts-proto's toTimestamp makes it (seconds, then nanos). */
  private timestampField(tag: number, date: Date): boolean {
    const ms = date.getTime();
    if (!(ms >= 0)) return false; // before 1970 (negative fields) or an invalid date
    const seconds = Math.trunc(ms / 1000);
    const nanos = (ms % 1000) * 1_000_000;
    const length = (seconds !== 0 ? 1 + varintSize(seconds) : 0) + (nanos !== 0 ? 1 + varintSize(nanos) : 0);
    this.varint(tag);
    this.buf[this.pos++] = length;
    if (seconds !== 0) {
      this.buf[this.pos++] = 8;
      this.varint(seconds);
    }
    if (nanos !== 0) {
      this.buf[this.pos++] = 16;
      this.varint(nanos);
    }
    return true;
  }
}

/** An int32 that encodes as a plain varint (non-negative). */
function isUint31(value: number): boolean {
  return (value | 0) === value && value >= 0;
}

/** The value of a decimal string without sign or leading zeros, up to 2^53 - 1; else undefined. */
function plainDecimal(text: string): number | undefined {
  const n = text.length;
  if (n === 0 || n > 15 || (n > 1 && text.charCodeAt(0) === 48)) return undefined;
  let value = 0;
  for (let i = 0; i < n; i += 1) {
    const digit = text.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return undefined;
    value = value * 10 + digit;
  }
  return value;
}

/** More than the encoded state can take (strings at 3 bytes per unit). */
function boundOf(s: Evaluation, metadata: Uint8Array | undefined): number {
  return (
    256 +
    3 *
      (s.evalId.length +
        s.codeHash.length +
        s.language.length +
        s.engine.length +
        s.executorId.length +
        s.containerId.length +
        s.outputLocation.length +
        s.errorPreview.length +
        s.errorLocation.length +
        s.cancelReason.length +
        s.codeSize.length +
        s.runtimeMs.length +
        s.outputSize.length +
        s.errorSize.length +
        s.revision.length +
        s.position.length +
        s.stdoutBytes.length +
        s.stderrBytes.length +
        s.tenantId.length) +
    s.outputPreview.length +
    (metadata?.length ?? 0)
  );
}

/**
 * `Struct.encode(Struct.wrap(object)).finish()`, as ts-proto writes it, without the wrapper
 * objects: each own enumerable key in order (not `__proto__`, which Struct.wrap's assignment
 * does not make a field; nor undefined values), values as google.protobuf.Value.
 */
export function encodeStruct(object: Record<string, unknown>): Uint8Array {
  const out = new Scratch();
  writeStructBody(out, object);
  return Uint8Array.prototype.slice.call(out.buf, 0, out.pos);
}

class Scratch {
  buf = Buffer.allocUnsafe(256);
  pos = 0;

  ensure(extra: number): void {
    if (this.pos + extra <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + extra));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  byte(value: number): void {
    this.ensure(1);
    this.buf[this.pos++] = value;
  }

  string(text: string): void {
    const length = Buffer.byteLength(text, 'utf8');
    this.ensure(length + 5);
    this.pos = writeVarintAt(this.buf, this.pos, length);
    this.pos += this.buf.write(text, this.pos, 'utf8');
  }

  /** Starts a length-delimited part: one byte kept for its length (moved when it needs more). */
  open(tag: number): number {
    this.ensure(2);
    this.buf[this.pos++] = tag;
    this.pos += 1;
    return this.pos;
  }

  close(start: number): void {
    const length = this.pos - start;
    const size = varintSize(length);
    if (size > 1) {
      this.ensure(size - 1);
      this.buf.copyWithin(start + size - 1, start, this.pos);
      this.pos += size - 1;
    }
    writeVarintAt(this.buf, start - 1, length);
  }
}

function writeStructBody(out: Scratch, object: Record<string, unknown>): void {
  for (const key of Object.keys(object)) {
    const value = object[key];
    if (key === '__proto__' || value === undefined) continue;
    const entry = out.open(10);
    if (key !== '') {
      out.byte(10);
      out.string(key);
    }
    const start = out.open(18);
    writeValueBody(out, value);
    out.close(start);
    out.close(entry);
  }
}

function writeValueBody(out: Scratch, value: unknown): void {
  if (value === null) {
    out.byte(8);
    out.byte(0);
  } else if (typeof value === 'boolean') {
    out.byte(32);
    out.byte(value ? 1 : 0);
  } else if (typeof value === 'number') {
    out.byte(17);
    out.ensure(8);
    out.pos = out.buf.writeDoubleLE(value, out.pos);
  } else if (typeof value === 'string') {
    out.byte(26);
    out.string(value);
  } else if (Array.isArray(value)) {
    const list = out.open(50);
    for (const item of value as unknown[]) {
      const start = out.open(10);
      writeValueBody(out, item);
      out.close(start);
    }
    out.close(list);
  } else if (typeof value === 'object') {
    const start = out.open(42);
    writeStructBody(out, value as Record<string, unknown>);
    out.close(start);
  } else if (value !== undefined) {
    throw new Error(`Unsupported any value type: ${typeof value}`);
  }
}
