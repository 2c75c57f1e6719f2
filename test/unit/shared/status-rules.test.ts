import { expect } from 'chai';
import {
  canTransition,
  isTerminal,
  isTerminalProto,
  parseStatus,
  statusOfProto,
  statusToProto,
  STATUSES,
  type Status,
} from '../../../shared/domain';
import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { createKeyLayout, INDEXED_STATUSES } from '../../../services/query/read-models/keys';

const ALLOWED: ReadonlyArray<[Status, Status]> = [
  ['queued', 'running'],
  ['queued', 'completed'],
  ['queued', 'failed'],
  ['queued', 'cancelled'],
  ['running', 'completed'],
  ['running', 'failed'],
  ['running', 'cancelled'],
];

describe('status rules', () => {
  for (const from of STATUSES) {
    for (const to of STATUSES) {
      const allowed = ALLOWED.some(([f, t]) => f === from && t === to);
      it(`${from} → ${to} is ${allowed ? 'allowed' : 'forbidden'}`, () => {
        expect(canTransition(from, to)).to.equal(allowed);
      });
    }
  }

  it('has exactly the terminal statuses completed, failed and cancelled', () => {
    expect(STATUSES.filter(isTerminal)).to.deep.equal(['completed', 'failed', 'cancelled']);
  });

  it('maps every status of the proto enum both ways, and nothing else', () => {
    const wire = Object.values(EvaluationStatus).filter(
      (v): v is EvaluationStatus =>
        typeof v === 'number' &&
        v !== EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED &&
        v !== EvaluationStatus.UNRECOGNIZED,
    );
    // A status added to evaluation.proto must be added to shared/domain/status.ts too.
    expect(wire.map((v) => statusOfProto(v))).to.deep.equal(STATUSES);
    for (const status of STATUSES) expect(statusOfProto(statusToProto(status))).to.equal(status);
    expect(statusOfProto(EvaluationStatus.EVALUATION_STATUS_UNSPECIFIED)).to.equal(undefined);
    expect(statusOfProto(99 as EvaluationStatus)).to.equal(undefined);
    expect(parseStatus('running')).to.equal('running');
    expect(parseStatus('toString')).to.equal(undefined);
    expect(isTerminalProto(EvaluationStatus.EVALUATION_STATUS_FAILED)).to.equal(true);
    expect(isTerminalProto(EvaluationStatus.EVALUATION_STATUS_QUEUED)).to.equal(false);
    expect(isTerminalProto(undefined)).to.equal(false);
  });

  it('names each read-model status index after the status', () => {
    const layout = createKeyLayout('p', 1);
    expect(INDEXED_STATUSES.map((s) => layout.indexStatus(0, 'default', s))).to.deep.equal(
      STATUSES.map((s) => `p:{p:0}:index:default/${s}`),
    );
  });
});
