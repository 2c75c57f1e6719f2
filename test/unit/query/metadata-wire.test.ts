import { expect } from 'chai';
import {
  Evaluation,
  EvaluationStatus,
  EvaluationUpdate,
  EventType,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  metadataOfEvaluation,
  metadataOfUpdate,
  statusOfEvaluation,
  tenantOfEvaluation,
  tenantOfUpdate,
  withMetadata,
} from '../../../services/query/wire/metadata';

const STATE = Evaluation.fromPartial({
  evalId: 'e-1',
  status: EvaluationStatus.EVALUATION_STATUS_RUNNING,
  codeHash: 'abc',
  codeSize: '12',
  outputPreview: Buffer.from('preview'),
  revision: '2',
  position: '77',
  createdAt: new Date('2025-01-01T00:00:00.123Z'),
});

const METADATA = { suite: 's', deep: { list: [1, 'x', false, null, { y: 2 }] }, text: 'é'.repeat(300) };

const update = (metadata?: Record<string, unknown>): Uint8Array =>
  EvaluationUpdate.encode({
    evaluation: { ...STATE, ...(metadata !== undefined ? { metadata } : {}) },
    eventType: EventType.EVENT_TYPE_EVALUATION_STARTED,
    revision: '2',
    position: '77',
  }).finish();

describe('metadata on the wire (updates stored without it, put back on the way out)', () => {
  it("puts a record's metadata into an update stored without it: the decoded update is the whole one", () => {
    const record = Evaluation.encode({ ...STATE, metadata: METADATA }).finish();
    const metadata = metadataOfEvaluation(record);
    expect(metadata).to.not.equal(null);
    const spliced = withMetadata(update(), metadata as Uint8Array);
    expect(EvaluationUpdate.decode(spliced)).to.deep.equal(EvaluationUpdate.decode(update(METADATA)));
    expect(metadataOfUpdate(spliced)).to.deep.equal(metadata);
  });

  it('keeps an empty Struct apart from none, and leaves an update that has metadata as it is', () => {
    const emptyRecord = Evaluation.encode({ ...STATE, metadata: {} }).finish();
    const empty = metadataOfEvaluation(emptyRecord);
    expect(empty).to.deep.equal(new Uint8Array(0));
    expect(EvaluationUpdate.decode(withMetadata(update(), empty as Uint8Array)).evaluation?.metadata).to.deep.equal({});
    expect(metadataOfEvaluation(Evaluation.encode(STATE).finish())).to.equal(null);
    expect(metadataOfUpdate(update())).to.equal(undefined);
    const whole = update(METADATA);
    expect(withMetadata(whole, new Uint8Array([10, 0]))).to.equal(whole);
  });

  it("grows the state's length prefix when the metadata pushes it past a varint byte", () => {
    const big = { blob: 'b'.repeat(20_000) };
    const record = Evaluation.encode({ ...STATE, metadata: big }).finish();
    const spliced = withMetadata(update(), metadataOfEvaluation(record) as Uint8Array);
    expect(EvaluationUpdate.decode(spliced).evaluation?.metadata).to.deep.equal(big);
    expect(EvaluationUpdate.decode(spliced).position).to.equal('77');
  });

  it('reads the status of a record without decoding it', () => {
    expect(statusOfEvaluation(Evaluation.encode({ ...STATE, metadata: METADATA }).finish())).to.equal(
      EvaluationStatus.EVALUATION_STATUS_RUNNING,
    );
    expect(statusOfEvaluation(Evaluation.encode({ ...STATE, status: 0 }).finish())).to.equal(0);
  });

  it('finds the metadata behind negative numbers (ten-byte varints) and tells unparsable bytes from none', () => {
    const record = Evaluation.encode({ ...STATE, exitCode: -9, runtimeMs: '-5', metadata: METADATA }).finish();
    const metadata = metadataOfEvaluation(record);
    expect(metadata).to.deep.equal(metadataOfEvaluation(Evaluation.encode({ ...STATE, metadata: METADATA }).finish()));
    const lean = EvaluationUpdate.encode(
      EvaluationUpdate.fromPartial({ evaluation: { ...STATE, exitCode: -9 }, revision: '2', position: '77' }),
    ).finish();
    expect(EvaluationUpdate.decode(withMetadata(lean, metadata as Uint8Array)).evaluation).to.deep.include({
      exitCode: -9,
      metadata: METADATA,
    });
    expect(metadataOfEvaluation(new Uint8Array([10, 50, 1, 2]))).to.equal(undefined); // a length past the end
    expect(metadataOfEvaluation(Evaluation.encode(STATE).finish())).to.equal(null);
  });

  it('leaves bytes that do not parse as they are', () => {
    const garbage = new Uint8Array([10, 200, 1, 2]);
    expect(withMetadata(garbage, new Uint8Array([1]))).to.equal(garbage);
    expect(metadataOfUpdate(garbage)).to.equal(undefined);
  });

  it("reads a record's and an update's tenant without decoding them, as ts-proto decodes it", () => {
    for (const tenantId of ['acme', 'globex.eu-1', 'é'.repeat(40)]) {
      const record = Evaluation.encode({ ...STATE, exitCode: -9, metadata: METADATA, tenantId }).finish();
      expect(tenantOfEvaluation(record)).to.equal(Evaluation.decode(record).tenantId);
      const whole = EvaluationUpdate.encode({
        evaluation: { ...STATE, metadata: METADATA, tenantId },
        eventType: EventType.EVENT_TYPE_EVALUATION_STARTED,
        revision: '2',
        position: '77',
      }).finish();
      expect(tenantOfUpdate(whole)).to.equal(tenantId);
    }
    // A state folded before tenants has none: it is the default tenant's.
    expect(tenantOfEvaluation(Evaluation.encode(STATE).finish())).to.equal('default');
    expect(tenantOfUpdate(update())).to.equal('default');
    // Unparsable bytes belong to nobody (no caller matches them).
    expect(tenantOfEvaluation(new Uint8Array([10, 50, 1, 2]))).to.equal(undefined);
    expect(tenantOfUpdate(new Uint8Array([10, 200, 1, 2]))).to.equal(undefined);
  });
});
