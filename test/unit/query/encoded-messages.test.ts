import { expect } from 'chai';
import {
  Evaluation,
  EvaluationStatus,
  EvaluationUpdate,
  EventType,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import {
  EvaluationQueryServiceService,
  GetEvaluationResponse,
  ListEvaluationsResponse,
  WatchEvaluationResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { decodeRemembering, EvaluationQueryServiceWire } from '../../../services/query/wire/encoded-messages';

const evaluation = Evaluation.fromPartial({
  evalId: 'e-1',
  status: EvaluationStatus.EVALUATION_STATUS_COMPLETED,
  codeHash: 'ab'.repeat(32),
  codeSize: '12',
  metadata: { suite: 'unit', n: 3 },
  outputPreview: Buffer.from('hello'),
  exitCode: 0,
  revision: '3',
  position: '9007199254740993',
  createdAt: new Date('2026-11-23T00:00:00.000Z'),
});
const update = EvaluationUpdate.fromPartial({
  evaluation,
  eventType: EventType.EVENT_TYPE_EVALUATION_COMPLETED,
  revision: '3',
  position: '9007199254740993',
});

describe('wire: responses reuse the bytes a message was decoded from', () => {
  it('serialises exactly as the generated encoder does, for fresh and remembered messages', () => {
    const stored = Buffer.from(Evaluation.encode(evaluation).finish());
    const remembered = decodeRemembering(Evaluation, stored);
    for (const value of [evaluation, remembered]) {
      const expected = Buffer.from(GetEvaluationResponse.encode({ evaluation: value }).finish());
      expect(EvaluationQueryServiceWire.getEvaluation.responseSerialize({ evaluation: value })).to.deep.equal(expected);
      const page = { evaluations: [value, evaluation], nextPageToken: 'next' };
      expect(EvaluationQueryServiceWire.listEvaluations.responseSerialize(page)).to.deep.equal(
        Buffer.from(ListEvaluationsResponse.encode(page).finish()),
      );
    }
    expect(EvaluationQueryServiceWire.getEvaluation.responseSerialize({})).to.deep.equal(Buffer.alloc(0));
  });

  it('writes the remembered bytes themselves, not a new encoding', () => {
    // Bytes that decode to the same message but would never be produced by the encoder
    // (an unknown field 99 appended) prove the stored bytes are what goes out.
    const withUnknown = Buffer.concat([
      Buffer.from(EvaluationUpdate.encode(update).finish()),
      Buffer.from([0x98, 0x06, 0x01]),
    ]);
    const remembered = decodeRemembering(EvaluationUpdate, withUnknown);
    const wire = EvaluationQueryServiceWire.watchEvaluations.responseSerialize({ update: remembered });
    expect(wire.subarray(wire.length - withUnknown.length)).to.deep.equal(withUnknown);
    expect(WatchEvaluationResponse.decode(wire).update).to.deep.equal(update);
  });

  it('non-update stream messages and the rest of the service are unchanged', () => {
    const progress = { progress: { position: '42' } };
    expect(EvaluationQueryServiceWire.watchEvaluation.responseSerialize(progress)).to.deep.equal(
      Buffer.from(WatchEvaluationResponse.encode(progress).finish()),
    );
    expect(EvaluationQueryServiceWire.readOutput).to.equal(EvaluationQueryServiceService.readOutput);
    expect(Object.keys(EvaluationQueryServiceWire)).to.have.members(Object.keys(EvaluationQueryServiceService));
  });
});
