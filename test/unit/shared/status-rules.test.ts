import { expect } from 'chai';
import { canTransition, isTerminal, STATUSES, type Status } from '../../../shared/domain';

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
});
