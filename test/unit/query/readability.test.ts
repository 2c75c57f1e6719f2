import { expect } from 'chai';
import { MAX_METADATA_DEPTH } from '../../../services/command/domain/validate';
import {
  DECODER_DEPTH_LIMIT,
  evaluationInResponse,
  nestingLevels,
  updateInResponse,
} from '../../../services/query/wire/readability';
import {
  Evaluation,
  EvaluationStatus,
  EvaluationUpdate,
  EventType,
  FailureReason,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  GetEvaluationResponse,
  ListEvaluationsResponse,
  WatchEvaluationResponse,
  WatchEvaluationsResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';

/** Objects nested `depth` levels deep (`{leaf}` is one level). */
function objects(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = { leaf: 'x' };
  for (let i = 1; i < depth; i += 1) value = { level: value };
  return value;
}

/** `value` inside `depth` lists. */
function inLists(value: unknown, depth: number): unknown {
  for (let i = 0; i < depth; i += 1) value = [value];
  return value;
}

const evaluationWith = (metadata: Record<string, unknown>): Evaluation =>
  Evaluation.fromPartial({
    evalId: 'e-1',
    status: EvaluationStatus.EVALUATION_STATUS_FAILED,
    codeHash: 'ab'.repeat(32),
    codeSize: '12',
    language: 'python',
    engine: 'docker',
    timeoutSeconds: 30,
    executorId: 'executor-ü',
    containerId: 'c-1',
    exitCode: 1,
    createdAt: new Date('2026-11-23T00:00:00.000Z'),
    startedAt: new Date('2026-11-23T00:00:01.000Z'),
    completedAt: new Date('2026-11-23T00:00:02.000Z'),
    runtimeMs: '1000',
    outputPreview: Buffer.from([0, 1, 0xff]),
    outputSize: '3',
    outputLocation: 'inline',
    errorPreview: 'Traceback ✗',
    errorSize: '11',
    errorLocation: 's3',
    failureReason: FailureReason.FAILURE_REASON_TIMEOUT,
    cancelReason: '',
    metadata,
    revision: '3',
    position: '9007199254740993',
    updatedAt: new Date('2026-11-23T00:00:02.000Z'),
  });

const updateWith = (metadata: Record<string, unknown>): EvaluationUpdate =>
  EvaluationUpdate.fromPartial({
    evaluation: evaluationWith(metadata),
    eventType: EventType.EVENT_TYPE_EVALUATION_FAILED,
    revision: '3',
    position: '9007199254740993',
  });

const updateBytes = (metadata: Record<string, unknown>): Uint8Array =>
  EvaluationUpdate.encode(updateWith(metadata)).finish();

/** Field 1 holding `bytes`: how every response here carries its message. */
const inFieldOne = (bytes: Uint8Array): Buffer => delimited(1, bytes);

/** A varint. */
function varint(n: number): number[] {
  const bytes: number[] = [];
  for (; n >= 128; n = Math.floor(n / 128)) bytes.push((n % 128) | 128);
  bytes.push(n);
  return bytes;
}

/** A length-delimited field. */
function delimited(field: number, bytes: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([...varint(field * 8 + 2), ...varint(bytes.length)]), bytes]);
}

/** A small seeded generator, so that a failure repeats. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

describe('wire readability: what a standard client could decode', () => {
  it(`the deepest response that carries metadata nests 3 × depth + 3 messages: ${3 * MAX_METADATA_DEPTH + 3} at the limit`, () => {
    const deepest = objects(MAX_METADATA_DEPTH);
    const update = updateWith(deepest);
    const levels = {
      watchEvaluations: nestingLevels(
        'crucible.storage.v1.WatchEvaluationsResponse',
        WatchEvaluationsResponse.encode({ update }).finish(),
      ),
      watchEvaluation: nestingLevels(
        'crucible.storage.v1.WatchEvaluationResponse',
        WatchEvaluationResponse.encode({ update }).finish(),
      ),
      getEvaluation: nestingLevels(
        'crucible.storage.v1.GetEvaluationResponse',
        GetEvaluationResponse.encode({ evaluation: update.evaluation }).finish(),
      ),
      listEvaluations: nestingLevels(
        'crucible.storage.v1.ListEvaluationsResponse',
        ListEvaluationsResponse.encode({ evaluations: [evaluationWith(deepest)], nextPageToken: '' }).finish(),
      ),
    };
    // Response → EvaluationUpdate → Evaluation → (Struct → map entry → Value) per level.
    expect(levels).to.deep.equal({
      watchEvaluations: 3 * MAX_METADATA_DEPTH + 3,
      watchEvaluation: 3 * MAX_METADATA_DEPTH + 3,
      getEvaluation: 3 * MAX_METADATA_DEPTH + 2,
      listEvaluations: 3 * MAX_METADATA_DEPTH + 2,
    });
    expect(levels.watchEvaluations).to.be.at.most(DECODER_DEPTH_LIMIT * 0.6);
    // A list costs two messages a level (ListValue → Value), fewer than an object.
    const lists = updateWith({ a: inLists(1, MAX_METADATA_DEPTH - 1) });
    const listLevels = nestingLevels(
      'crucible.storage.v1.WatchEvaluationsResponse',
      WatchEvaluationsResponse.encode({ update: lists }).finish(),
    );
    expect(listLevels).to.be.below(levels.watchEvaluations);
  });

  it('draws the line where ts-proto does: metadata 32 levels deep decodes in a watch response, 33 does not', () => {
    const fits = updateBytes(objects(32));
    const over = updateBytes(objects(33));
    expect(updateInResponse(fits)).to.equal(undefined);
    expect(WatchEvaluationsResponse.decode(inFieldOne(fits)).update?.evaluation?.evalId).to.equal('e-1');
    expect(updateInResponse(over)).to.match(/nest deeper than 100 levels/);
    expect(() => WatchEvaluationsResponse.decode(inFieldOne(over))).to.throw(/recursion limit/);
    // The record is one level shallower, and so is its response.
    const record = Evaluation.encode(evaluationWith(objects(32))).finish();
    expect(evaluationInResponse(record)).to.equal(undefined);
    expect(evaluationInResponse(Evaluation.encode(evaluationWith(objects(33))).finish())).to.match(/deeper/);
  });

  it('refuses what a standard decoder refuses', () => {
    const valid = Buffer.from(updateBytes({ suite: 'unit', list: [1, 'two', null, true, {}] }));
    expect(updateInResponse(valid)).to.equal(undefined);
    const notUtf8 = Buffer.from([0x61, 0xff]);
    // EvaluationUpdate.evaluation (1) → Evaluation.eval_id (1), and → metadata (23) → entry (1) → key (1).
    const evalId = delimited(1, delimited(1, notUtf8));
    const metadataKey = delimited(1, delimited(23, delimited(1, delimited(1, notUtf8))));
    const cases: [string, Uint8Array, RegExp][] = [
      ['cut short', valid.subarray(0, valid.length - 3), /runs? past/],
      ['a length beyond the end', Buffer.from([0x0a, 0x7f, 0x01]), /127 bytes run past/],
      ['a varint cut short', Buffer.from([0x10, 0xff]), /varint runs past/],
      ['a varint of 11 bytes', Buffer.from([0x10, ...new Array<number>(10).fill(0xff), 0x01]), /varint runs past/],
      ['wire type 7', Buffer.from([0x0f]), /wire type 7/],
      ['a group', Buffer.from([0x0b, 0x0c]), /a group/],
      ['field number 0', Buffer.from([0x02, 0x00]), /no field 0/],
      ['an eval_id that is not UTF-8', evalId, /not UTF-8/],
      ['a metadata key that is not UTF-8', metadataKey, /not UTF-8/],
      [
        'a nested message longer than its parent',
        Buffer.from([0x0a, 0x03, 0x0a, 0x05, 0x61, 0x62, 0x63, 0x64, 0x65]),
        /run past its message/,
      ],
    ];
    for (const [what, bytes, reason] of cases) expect(updateInResponse(bytes), what).to.match(reason);
    // Fields this version does not know are skipped, as every decoder skips them.
    const unknown = Buffer.concat([valid, Buffer.from([0xf8, 0x07, 0x01, 0xfa, 0x07, 0x02, 0xff, 0xff])]);
    expect(updateInResponse(unknown)).to.equal(undefined);
  });

  it('never calls readable what ts-proto cannot decode inside the response (random damage to real updates)', () => {
    const next = random(20261123);
    const valid = Buffer.from(updateBytes({ suite: 'unit', nested: { a: [1, { b: 'c' }], d: null }, e: true }));
    let readable = 0;
    let refused = 0;
    for (let i = 0; i < 5000; i += 1) {
      const bytes = Buffer.from(valid);
      const kind = next();
      if (kind < 0.4) {
        for (let j = 0; j < 1 + Math.floor(next() * 3); j += 1) bytes[Math.floor(next() * bytes.length)] = next() * 256;
      } else if (kind < 0.7) {
        const at = Math.floor(next() * bytes.length);
        bytes[at] = (bytes[at] ?? 0) ^ (1 << Math.floor(next() * 8));
      } else {
        bytes.fill(Math.floor(next() * 256), Math.floor(next() * bytes.length));
      }
      if (updateInResponse(bytes) === undefined) {
        readable += 1;
        expect(() => WatchEvaluationsResponse.decode(inFieldOne(bytes)), `case ${i}`).to.not.throw();
      } else {
        refused += 1;
      }
    }
    // Both sides of the line were tried.
    expect(readable).to.be.above(500);
    expect(refused).to.be.above(500);
  });
});
