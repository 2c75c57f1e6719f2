import { expect } from 'chai';
import { RequestChecks } from '../../../services/query/domain/requests';
import { loadConfig, type Limits } from '../../../shared/config';
import { ValidationError } from '../../../shared/errors';
import {
  CancelEvaluationRequest,
  CompleteEvaluationHeader,
  CompleteEvaluationRequest,
  FailEvaluationRequest,
  StartEvaluationRequest,
  SubmitEvaluationRequest,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import { FailureReason } from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  validateCancel,
  validateComplete,
  validateCompleteHeader,
  validateFail,
  validateStart,
  validateSubmit,
} from '../../../services/command/domain';
import { MAX_METADATA_DEPTH, MAX_METADATA_WIRE_BYTES } from '../../../services/command/domain/validate';
import { Struct } from '../../../shared/generated/google/protobuf/struct';

const LIMITS: Limits = loadConfig({ ENVIRONMENT: 'test' }).limits;

function limits(overrides: Partial<Limits>): Limits {
  return { ...LIMITS, ...overrides };
}

/** The [field, rule] pairs a validation throws; fails the test when it does not throw. */
function violationsOf(validate: () => unknown): [string, string][] {
  try {
    validate();
  } catch (err) {
    expect(err).to.be.instanceOf(ValidationError);
    const violations = (err as ValidationError).violations;
    for (const v of violations) expect(v.description, `${v.field}/${v.rule} has a description`).to.not.equal('');
    return violations.map((v) => [v.field, v.rule]);
  }
  expect.fail('expected a ValidationError');
}

function submitRequest(overrides: Partial<SubmitEvaluationRequest> = {}): SubmitEvaluationRequest {
  return SubmitEvaluationRequest.fromPartial({
    evalId: 'eval-1',
    code: 'print(1)',
    language: 'python',
    engine: 'docker',
    timeoutSeconds: 30,
    metadata: { team: 'a' },
    ...overrides,
  });
}

describe('command validation', () => {
  describe('validateSubmit', () => {
    it('turns a valid request into a SubmitEvaluation', () => {
      const command = validateSubmit(submitRequest({ requestId: 'req-1', expectedRevision: '0' }), LIMITS);
      expect(command).to.deep.equal({
        type: 'SubmitEvaluation',
        evalId: 'eval-1',
        code: 'print(1)',
        language: 'python',
        engine: 'docker',
        timeoutSeconds: 30,
        metadata: { team: 'a' },
        requestId: 'req-1',
        expectedRevision: '0',
      });
    });

    it('leaves eval_id, request_id and expected_revision out when they are not given', () => {
      const command = validateSubmit(submitRequest({ evalId: '', metadata: undefined }), LIMITS);
      expect(command).to.not.have.any.keys('evalId', 'requestId', 'expectedRevision');
      expect(command.metadata).to.deep.equal({});
    });

    it('rejects an eval_id that breaks the pattern (PATTERN)', () => {
      for (const evalId of ['-starts-with-dash', 'has space', 'a/b']) {
        expect(
          violationsOf(() => validateSubmit(submitRequest({ evalId }), LIMITS)),
          evalId,
        ).to.deep.equal([['eval_id', 'PATTERN']]);
      }
    });

    it('caps eval_id at 128 characters whatever the pattern allows (TOO_LONG), as the query side does', () => {
      const permissive = limits({ evalIdPattern: /^.+$/ });
      expect(() => validateSubmit(submitRequest({ evalId: 'x'.repeat(128) }), permissive)).to.not.throw();
      for (const l of [LIMITS, permissive]) {
        expect(violationsOf(() => validateSubmit(submitRequest({ evalId: 'x'.repeat(129) }), l))).to.deep.equal([
          ['eval_id', 'TOO_LONG'],
        ]);
      }
      const query = new RequestChecks();
      query.evalId('x'.repeat(129));
      expect(() => query.done()).to.throw(/at most 128 characters/);
    });

    it('uses the configured eval_id pattern', () => {
      const strict = limits({ evalIdPattern: /^ev-[0-9]+$/ });
      expect(() => validateSubmit(submitRequest({ evalId: 'ev-12' }), strict)).to.not.throw();
      expect(violationsOf(() => validateSubmit(submitRequest({ evalId: 'eval-1' }), strict))).to.deep.equal([
        ['eval_id', 'PATTERN'],
      ]);
    });

    it('requires code that is not blank (REQUIRED)', () => {
      for (const code of ['', '   \n\t']) {
        expect(violationsOf(() => validateSubmit(submitRequest({ code }), LIMITS))).to.deep.equal([
          ['code', 'REQUIRED'],
        ]);
      }
    });

    it('measures the code limit in UTF-8 bytes, not characters (TOO_LARGE)', () => {
      const small = limits({ maxCodeBytes: 8 });
      expect(() => validateSubmit(submitRequest({ code: '12345678' }), small)).to.not.throw();
      // 4 characters, 12 bytes.
      expect(violationsOf(() => validateSubmit(submitRequest({ code: '€€€€' }), small))).to.deep.equal([
        ['code', 'TOO_LARGE'],
      ]);
    });

    it('requires a known language and engine (REQUIRED, UNKNOWN)', () => {
      expect(violationsOf(() => validateSubmit(submitRequest({ language: '', engine: '' }), LIMITS))).to.deep.equal([
        ['language', 'REQUIRED'],
        ['engine', 'REQUIRED'],
      ]);
      expect(
        violationsOf(() => validateSubmit(submitRequest({ language: 'cobol', engine: 'vmware' }), LIMITS)),
      ).to.deep.equal([
        ['language', 'UNKNOWN'],
        ['engine', 'UNKNOWN'],
      ]);
      const custom = limits({ languages: ['cobol'], engines: ['vmware'] });
      expect(() => validateSubmit(submitRequest({ language: 'cobol', engine: 'vmware' }), custom)).to.not.throw();
    });

    it('accepts timeout_seconds from 1 to the maximum only (OUT_OF_RANGE)', () => {
      const max = LIMITS.maxTimeoutSeconds;
      for (const timeoutSeconds of [1, max]) {
        expect(() => validateSubmit(submitRequest({ timeoutSeconds }), LIMITS), String(timeoutSeconds)).to.not.throw();
      }
      for (const timeoutSeconds of [0, -5, max + 1]) {
        expect(
          violationsOf(() => validateSubmit(submitRequest({ timeoutSeconds }), LIMITS)),
          String(timeoutSeconds),
        ).to.deep.equal([['timeout_seconds', 'OUT_OF_RANGE']]);
      }
    });

    it('limits metadata by its JSON size (TOO_LARGE)', () => {
      const small = limits({ maxMetadataBytes: 20 });
      expect(() => validateSubmit(submitRequest({ metadata: { a: '1234' } }), small)).to.not.throw();
      expect(
        violationsOf(() => validateSubmit(submitRequest({ metadata: { a: 'x'.repeat(30) } }), small)),
      ).to.deep.equal([['metadata', 'TOO_LARGE']]);
    });

    it(`limits metadata to ${MAX_METADATA_DEPTH} levels of objects and lists (TOO_DEEP)`, () => {
      const objects = (depth: number): Record<string, unknown> => {
        let value: Record<string, unknown> = { leaf: 1 };
        for (let i = 1; i < depth; i += 1) value = { level: value };
        return value;
      };
      /** `value` inside `depth` lists. */
      const inLists = (value: unknown, depth: number): unknown => {
        for (let i = 0; i < depth; i += 1) value = [value];
        return value;
      };
      const accepted: [string, Record<string, unknown>][] = [
        ['objects', objects(MAX_METADATA_DEPTH)],
        ['lists under the top object', { a: inLists(1, MAX_METADATA_DEPTH - 1) }],
        ['an empty object at the last level', { a: inLists({}, MAX_METADATA_DEPTH - 2) }],
        ['objects in lists', { a: [{ b: [{ c: objects(MAX_METADATA_DEPTH - 5) }] }] }],
        ['many shallow keys beside one deep one', { ...objects(MAX_METADATA_DEPTH), x: 1, y: [2], z: {} }],
      ];
      for (const [what, metadata] of accepted) {
        expect(() => validateSubmit(submitRequest({ metadata }), LIMITS), what).to.not.throw();
      }
      const refused: [string, Record<string, unknown>][] = [
        ['objects', objects(MAX_METADATA_DEPTH + 1)],
        ['lists under the top object', { a: inLists(1, MAX_METADATA_DEPTH) }],
        ['an empty object one level too deep', { x: 1, a: inLists({}, MAX_METADATA_DEPTH - 1) }],
        ['objects in lists', { a: [{ b: [{ c: objects(MAX_METADATA_DEPTH - 4) }] }] }],
        ['what the request decoder let through', objects(33)],
      ];
      for (const [what, metadata] of refused) {
        expect(
          violationsOf(() => validateSubmit(submitRequest({ metadata }), LIMITS)),
          what,
        ).to.deep.equal([['metadata', 'TOO_DEEP']]);
      }
    });

    it('refuses metadata 100,000 levels deep as TOO_DEEP, without overflowing the stack', () => {
      let objects: Record<string, unknown> = {};
      let lists: unknown[] = [];
      for (let i = 0; i < 100_000; i += 1) {
        objects = { a: objects };
        lists = [lists];
      }
      for (const metadata of [objects, { lists }]) {
        // A JSON size or U+0000 check first would recurse (JSON.stringify throws a RangeError).
        expect(violationsOf(() => validateSubmit(submitRequest({ metadata }), LIMITS))).to.deep.equal([
          ['metadata', 'TOO_DEEP'],
        ]);
      }
    });

    it(`limits metadata to ${MAX_METADATA_WIRE_BYTES} bytes as protobuf, counted as ts-proto encodes it (TOO_LARGE)`, () => {
      const roomy = limits({ maxMetadataBytes: 16 * 1024 * 1024 });
      const wireBytes = (metadata: Record<string, unknown>): number =>
        Struct.encode(Struct.wrap(metadata)).finish().length;
      // Numbers in a list: 2 bytes of JSON each, 11 of protobuf. Find the longest list that fits.
      const numbers = (n: number): Record<string, unknown> => ({ n: new Array<number>(n).fill(0) });
      let n = Math.floor(MAX_METADATA_WIRE_BYTES / 11);
      while (wireBytes(numbers(n + 1)) <= MAX_METADATA_WIRE_BYTES) n += 1;
      while (wireBytes(numbers(n)) > MAX_METADATA_WIRE_BYTES) n -= 1;
      expect(() => validateSubmit(submitRequest({ metadata: numbers(n) }), roomy)).to.not.throw();
      expect(violationsOf(() => validateSubmit(submitRequest({ metadata: numbers(n + 1) }), roomy))).to.deep.equal([
        ['metadata', 'TOO_LARGE'],
      ]);
      // The count it reports is ts-proto's, for every kind of value (and an empty key, which
      // proto3 leaves out, a list item decoded from an empty Value, multi-byte characters).
      const pad = 'p'.repeat(MAX_METADATA_WIRE_BYTES);
      const samples: Record<string, unknown>[] = [
        { pad },
        { pad, '': 'empty key', null: null, t: true, f: false, zero: 0, pi: 3.14, s: '', ü: 'ünïcødé ✓' },
        { pad, list: [1, 'two', null, false, [], {}, [[{ deep: ['x'] }]], undefined] },
        { pad, o: { a: { b: { c: 'd' } }, e: [] }, undefinedIsDropped: undefined },
        { pad: 'q'.repeat(100), many: Object.fromEntries(Array.from({ length: 70_000 }, (_, i) => [`k${i}`, i])) },
      ];
      for (const metadata of samples) {
        const expected = wireBytes(metadata);
        expect(expected).to.be.above(MAX_METADATA_WIRE_BYTES);
        try {
          validateSubmit(submitRequest({ metadata }), roomy);
          expect.fail('expected a ValidationError');
        } catch (err) {
          expect((err as ValidationError).violations[0]?.description).to.match(
            new RegExp(`as protobuf.*got ${expected}$`),
          );
        }
      }
    });

    it('limits request_id to 128 printable characters (TOO_LONG, PATTERN)', () => {
      expect(() => validateSubmit(submitRequest({ requestId: 'r'.repeat(128) }), LIMITS)).to.not.throw();
      expect(violationsOf(() => validateSubmit(submitRequest({ requestId: 'r'.repeat(129) }), LIMITS))).to.deep.equal([
        ['request_id', 'TOO_LONG'],
      ]);
      for (const requestId of ['has space', 'tab\there', 'ünï']) {
        expect(
          violationsOf(() => validateSubmit(submitRequest({ requestId }), LIMITS)),
          requestId,
        ).to.deep.equal([['request_id', 'PATTERN']]);
      }
    });

    it('rejects a negative expected_revision (NOT_NEGATIVE) and normalises the others', () => {
      expect(violationsOf(() => validateSubmit(submitRequest({ expectedRevision: '-1' }), LIMITS))).to.deep.equal([
        ['expected_revision', 'NOT_NEGATIVE'],
      ]);
      expect(validateSubmit(submitRequest({ expectedRevision: '007' }), LIMITS).expectedRevision).to.equal('7');
    });

    it('reports every violation at once', () => {
      const request = SubmitEvaluationRequest.fromPartial({
        evalId: '!bad',
        code: '',
        language: 'cobol',
        engine: '',
        timeoutSeconds: 0,
        metadata: { big: 'x'.repeat(100) },
        requestId: 'r'.repeat(200),
        expectedRevision: '-3',
      });
      expect(violationsOf(() => validateSubmit(request, limits({ maxMetadataBytes: 50 })))).to.have.deep.members([
        ['eval_id', 'PATTERN'],
        ['code', 'REQUIRED'],
        ['language', 'UNKNOWN'],
        ['engine', 'REQUIRED'],
        ['timeout_seconds', 'OUT_OF_RANGE'],
        ['metadata', 'TOO_LARGE'],
        ['request_id', 'TOO_LONG'],
        ['expected_revision', 'NOT_NEGATIVE'],
      ]);
    });

    it('names each field in the error message', () => {
      try {
        validateSubmit(submitRequest({ language: 'cobol', timeoutSeconds: 0 }), LIMITS);
        expect.fail('expected a ValidationError');
      } catch (err) {
        expect((err as Error).message).to.match(/^language: .+; timeout_seconds: /);
      }
    });
  });

  describe('validateStart', () => {
    const request = (overrides: Partial<StartEvaluationRequest> = {}): StartEvaluationRequest =>
      StartEvaluationRequest.fromPartial({ evalId: 'eval-1', executorId: 'exec-1', containerId: 'c-1', ...overrides });

    it('turns a valid request into a StartEvaluation', () => {
      expect(validateStart(request({ requestId: 'r1', expectedRevision: '1' }), LIMITS)).to.deep.equal({
        type: 'StartEvaluation',
        evalId: 'eval-1',
        executorId: 'exec-1',
        containerId: 'c-1',
        requestId: 'r1',
        expectedRevision: '1',
      });
      expect(() => validateStart(request({ containerId: '' }), LIMITS), 'container_id is optional').to.not.throw();
    });

    it('requires eval_id and executor_id (REQUIRED)', () => {
      expect(violationsOf(() => validateStart(request({ evalId: '', executorId: '' }), LIMITS))).to.deep.equal([
        ['eval_id', 'REQUIRED'],
        ['executor_id', 'REQUIRED'],
      ]);
    });

    it('limits executor_id to 128 and container_id to 256 characters (TOO_LONG)', () => {
      expect(() =>
        validateStart(request({ executorId: 'e'.repeat(128), containerId: 'c'.repeat(256) }), LIMITS),
      ).to.not.throw();
      expect(
        violationsOf(() =>
          validateStart(request({ executorId: 'e'.repeat(129), containerId: 'c'.repeat(257) }), LIMITS),
        ),
      ).to.deep.equal([
        ['executor_id', 'TOO_LONG'],
        ['container_id', 'TOO_LONG'],
      ]);
    });

    it('checks eval_id, request_id and expected_revision like every command', () => {
      expect(
        violationsOf(() => validateStart(request({ evalId: 'a b', requestId: 'x y', expectedRevision: '-1' }), LIMITS)),
      ).to.deep.equal([
        ['eval_id', 'PATTERN'],
        ['request_id', 'PATTERN'],
        ['expected_revision', 'NOT_NEGATIVE'],
      ]);
    });
  });

  describe('validateComplete', () => {
    const request = (overrides: Partial<CompleteEvaluationRequest> = {}): CompleteEvaluationRequest =>
      CompleteEvaluationRequest.fromPartial({
        evalId: 'eval-1',
        output: Buffer.from('hello'),
        exitCode: 0,
        ...overrides,
      });

    it('keeps the output bytes and the exit code', () => {
      const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe]);
      const command = validateComplete(request({ output: bytes, exitCode: 3 }), LIMITS);
      expect(command.type).to.equal('CompleteEvaluation');
      expect(Buffer.isBuffer(command.output)).to.equal(true);
      expect(command.output.equals(bytes)).to.equal(true);
      expect(command.exitCode).to.equal(3);
    });

    it('accepts an empty output and requires eval_id', () => {
      expect(() => validateComplete(request({ output: Buffer.alloc(0) }), LIMITS)).to.not.throw();
      expect(violationsOf(() => validateComplete(request({ evalId: '' }), LIMITS))).to.deep.equal([
        ['eval_id', 'REQUIRED'],
      ]);
    });

    it('limits the output to the configured size (TOO_LARGE)', () => {
      const small = limits({ maxOutputBytes: 4 });
      expect(() => validateComplete(request({ output: Buffer.alloc(4) }), small)).to.not.throw();
      expect(violationsOf(() => validateComplete(request({ output: Buffer.alloc(5) }), small))).to.deep.equal([
        ['output', 'TOO_LARGE'],
      ]);
    });
  });

  describe('validateCompleteHeader (CompleteEvaluationStream)', () => {
    const header = (overrides: Partial<CompleteEvaluationHeader> = {}): CompleteEvaluationHeader =>
      CompleteEvaluationHeader.fromPartial({ evalId: 'eval-1', exitCode: 2, outputSize: '300', ...overrides });

    it('keeps the completion and the output size, and the options as CompleteEvaluation does', () => {
      expect(validateCompleteHeader(header({ requestId: 'r-1', expectedRevision: '2' }), LIMITS)).to.deep.equal({
        evalId: 'eval-1',
        exitCode: 2,
        outputSize: 300,
        options: { requestId: 'r-1', expectedRevision: '2' },
      });
    });

    it('requires a header first', () => {
      expect(violationsOf(() => validateCompleteHeader(undefined, LIMITS))).to.deep.equal([['header', 'REQUIRED']]);
    });

    it('names every broken field of the header, under header.', () => {
      const small = limits({ maxStreamedOutputBytes: 100 });
      expect(
        violationsOf(() => validateCompleteHeader(header({ evalId: '', outputSize: '101', requestId: 'a b' }), small)),
      ).to.deep.equal([
        ['header.eval_id', 'REQUIRED'],
        ['header.output_size', 'TOO_LARGE'],
        ['header.request_id', 'PATTERN'],
      ]);
      expect(violationsOf(() => validateCompleteHeader(header({ outputSize: '-1' }), LIMITS))).to.deep.equal([
        ['header.output_size', 'NOT_NEGATIVE'],
      ]);
      expect(validateCompleteHeader(header({ outputSize: '100' }), small).outputSize).to.equal(100);
    });
  });

  describe('validateFail', () => {
    const request = (overrides: Partial<FailEvaluationRequest> = {}): FailEvaluationRequest =>
      FailEvaluationRequest.fromPartial({
        evalId: 'eval-1',
        error: 'Traceback',
        exitCode: 1,
        reason: FailureReason.FAILURE_REASON_ERROR,
        ...overrides,
      });

    it('maps the reason: TIMEOUT → timeout, ERROR and UNSPECIFIED → error', () => {
      expect(validateFail(request({ reason: FailureReason.FAILURE_REASON_TIMEOUT }), LIMITS).reason).to.equal(
        'timeout',
      );
      expect(validateFail(request({ reason: FailureReason.FAILURE_REASON_ERROR }), LIMITS).reason).to.equal('error');
      expect(validateFail(request({ reason: FailureReason.FAILURE_REASON_UNSPECIFIED }), LIMITS).reason).to.equal(
        'error',
      );
    });

    it('rejects an unknown reason (UNKNOWN)', () => {
      expect(violationsOf(() => validateFail(request({ reason: 7 as FailureReason }), LIMITS))).to.deep.equal([
        ['reason', 'UNKNOWN'],
      ]);
      expect(violationsOf(() => validateFail(request({ reason: FailureReason.UNRECOGNIZED }), LIMITS))).to.deep.equal([
        ['reason', 'UNKNOWN'],
      ]);
    });

    it('measures the error limit in UTF-8 bytes (TOO_LARGE)', () => {
      const small = limits({ maxOutputBytes: 6 });
      expect(() => validateFail(request({ error: 'abcdef' }), small)).to.not.throw();
      // 3 characters, 9 bytes.
      expect(violationsOf(() => validateFail(request({ error: '€€€' }), small))).to.deep.equal([
        ['error', 'TOO_LARGE'],
      ]);
    });

    it('reports every violation at once', () => {
      expect(
        violationsOf(() =>
          validateFail(
            request({ evalId: '', error: 'x'.repeat(10), reason: 9 as FailureReason, requestId: ' ' }),
            limits({ maxOutputBytes: 5 }),
          ),
        ),
      ).to.deep.equal([
        ['eval_id', 'REQUIRED'],
        ['error', 'TOO_LARGE'],
        ['reason', 'UNKNOWN'],
        ['request_id', 'PATTERN'],
      ]);
    });
  });

  describe('validateCancel', () => {
    const request = (overrides: Partial<CancelEvaluationRequest> = {}): CancelEvaluationRequest =>
      CancelEvaluationRequest.fromPartial({ evalId: 'eval-1', reason: 'user asked', ...overrides });

    it('turns a valid request into a CancelEvaluation; the reason is optional', () => {
      expect(validateCancel(request(), LIMITS)).to.deep.equal({
        type: 'CancelEvaluation',
        evalId: 'eval-1',
        reason: 'user asked',
      });
      expect(() => validateCancel(request({ reason: '' }), LIMITS)).to.not.throw();
    });

    it('limits the reason to 1024 characters (TOO_LONG) and requires eval_id', () => {
      expect(() => validateCancel(request({ reason: 'r'.repeat(1024) }), LIMITS)).to.not.throw();
      expect(
        violationsOf(() => validateCancel(request({ evalId: '', reason: 'r'.repeat(1025) }), LIMITS)),
      ).to.deep.equal([
        ['eval_id', 'REQUIRED'],
        ['reason', 'TOO_LONG'],
      ]);
    });
  });
});
