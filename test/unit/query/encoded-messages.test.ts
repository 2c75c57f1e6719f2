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
  ReadOutputResponse,
  WatchEvaluationResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import { allocateReadOutputChunk, EvaluationQueryServiceWire } from '../../../services/query/wire/encoded-messages';
import { encodeOnce, fromBytes, undecodable } from '../../../services/query/wire/encoded';

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

describe('wire: responses write the bytes the read models hold', () => {
  it('serialises exactly as the generated encoder does, for messages read from bytes and encoded once', () => {
    const stored = Buffer.from(Evaluation.encode(evaluation).finish());
    for (const value of [fromBytes(Evaluation, stored), encodeOnce(Evaluation, evaluation)]) {
      const expected = Buffer.from(GetEvaluationResponse.encode({ evaluation }).finish());
      expect(EvaluationQueryServiceWire.getEvaluation.responseSerialize({ evaluation: value })).to.deep.equal(expected);
      const page = { evaluations: [value, encodeOnce(Evaluation, evaluation)], nextPageToken: 'next' };
      expect(EvaluationQueryServiceWire.listEvaluations.responseSerialize(page)).to.deep.equal(
        Buffer.from(
          ListEvaluationsResponse.encode({ evaluations: [evaluation, evaluation], nextPageToken: 'next' }).finish(),
        ),
      );
      for (const coversEndedSince of [new Date('2026-12-06T10:11:12.345Z'), new Date(-1500)]) {
        expect(
          EvaluationQueryServiceWire.listEvaluations.responseSerialize({ ...page, coversEndedSince }),
        ).to.deep.equal(
          Buffer.from(
            ListEvaluationsResponse.encode({
              evaluations: [evaluation, evaluation],
              nextPageToken: 'next',
              coversEndedSince,
            }).finish(),
          ),
        );
      }
    }
  });

  it('decodes a record read from bytes only when its message is asked for', () => {
    let decodes = 0;
    const counting = {
      decode: (bytes: Uint8Array): Evaluation => {
        decodes += 1;
        return Evaluation.decode(bytes);
      },
    };
    const encoded = fromBytes(counting, Buffer.from(Evaluation.encode(evaluation).finish()));
    EvaluationQueryServiceWire.getEvaluation.responseSerialize({ evaluation: encoded });
    expect(decodes, 'serving the record').to.equal(0);
    expect(encoded.message.evalId).to.equal('e-1');
    expect(encoded.message.evalId).to.equal('e-1');
    expect(decodes, 'reading it twice').to.equal(1);
  });

  it('writes the remembered bytes themselves, not a new encoding', () => {
    // Bytes that decode to the same message but would never be produced by the encoder
    // (an unknown field 99 appended) prove the stored bytes are what goes out.
    const withUnknown = Buffer.concat([
      Buffer.from(EvaluationUpdate.encode(update).finish()),
      Buffer.from([0x98, 0x06, 0x01]),
    ]);
    const stored = fromBytes(EvaluationUpdate, withUnknown);
    const wire = EvaluationQueryServiceWire.watchEvaluations.responseSerialize({ update: stored });
    expect(wire.subarray(wire.length - withUnknown.length)).to.deep.equal(withUnknown);
    expect(WatchEvaluationResponse.decode(wire).update).to.deep.equal(update);
  });

  it('sends an update no client could decode as a progress marker at its position, on both watch RPCs', () => {
    const standIn = EvaluationUpdate.fromPartial({ position: '42', revision: '2', evaluation: { evalId: 'e-1' } });
    const value = { update: undecodable(Buffer.from([0x0a, 0x7f]), standIn, 'its 127 bytes run past its message') };
    const expected = Buffer.from(WatchEvaluationResponse.encode({ progress: { position: '42' } }).finish());
    expect(EvaluationQueryServiceWire.watchEvaluation.responseSerialize(value)).to.deep.equal(expected);
    expect(EvaluationQueryServiceWire.watchEvaluations.responseSerialize(value)).to.deep.equal(expected);
  });

  it('non-update stream messages and the rest of the service are unchanged', () => {
    const progress = { progress: { position: '42' } };
    expect(EvaluationQueryServiceWire.watchEvaluation.responseSerialize(progress)).to.deep.equal(
      Buffer.from(WatchEvaluationResponse.encode(progress).finish()),
    );
    expect(EvaluationQueryServiceWire.getProjectionStatus).to.equal(EvaluationQueryServiceService.getProjectionStatus);
    expect(Object.keys(EvaluationQueryServiceWire)).to.have.members(Object.keys(EvaluationQueryServiceService));
  });

  it('writes ReadOutput responses byte for byte as the generated encoder does, at every size and default', () => {
    const sizes = [0, 1, 127, 128, 16_383, 16_384, 524_224, 2_097_152];
    const positions = ['0', '1', '127', '128', '300', '2097152', '4294967296', '1073741824000'];
    for (const size of sizes) {
      const chunk = Buffer.alloc(size, size % 251);
      for (const offset of positions) {
        for (const totalSize of ['0', '5', offset, '9007199254740991']) {
          const value = { chunk, offset, totalSize };
          const wire = EvaluationQueryServiceWire.readOutput.responseSerialize(value);
          const generated = Buffer.from(ReadOutputResponse.encode(value).finish());
          expect(wire.equals(generated), `${size} ${offset} ${totalSize}`).to.equal(true);
        }
      }
    }
  });

  it('writes a ReadOutput chunk with headroom without copying it: its fields go in front, and it decodes the same', () => {
    for (const size of [1, 127, 128, 524_224]) {
      for (const [offset, totalSize] of [
        ['0', '0'],
        ['0', String(size)],
        ['524224', '1073741824'],
        ['9007199254740991', '9007199254740991'],
      ] as const) {
        const chunk = allocateReadOutputChunk(size);
        chunk.fill(size % 251);
        const wire = EvaluationQueryServiceWire.readOutput.responseSerialize({ chunk, offset, totalSize });
        expect(wire.buffer, 'the chunk’s own memory').to.equal(chunk.buffer);
        expect(ReadOutputResponse.decode(wire)).to.deep.equal({ chunk, offset, totalSize });
      }
    }
    // A view that does not start at the headroom is copied as any other chunk.
    const inner = allocateReadOutputChunk(1000).subarray(10, 20);
    const copied = EvaluationQueryServiceWire.readOutput.responseSerialize({
      chunk: inner,
      offset: '1',
      totalSize: '2',
    });
    expect(copied.buffer).to.not.equal(inner.buffer);
    expect(
      copied.equals(Buffer.from(ReadOutputResponse.encode({ chunk: inner, offset: '1', totalSize: '2' }).finish())),
    ).to.equal(true);
  });
});
