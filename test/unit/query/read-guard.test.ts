import { expect } from 'chai';
import { UnavailableError } from '../../../shared/errors';
import { silentLogger } from '../../../shared/logging';
import { createReadGuard } from '../../../services/query/live/read-guard';

function guardOver(applied: bigint, firstPositions: Record<string, bigint> = {}, stalled?: string) {
  const catchUps: string[] = [];
  const repairs: string[][] = [];
  let indexChecks = 0;
  const guard = createReadGuard({
    projection: {
      status: () => ({ checkpoint: applied, stalled }),
      requestCatchUp: (reason) => catchUps.push(reason),
      repair: (evalIds) => repairs.push([...evalIds]),
    },
    firstPositionOf: (evalId) => Promise.resolve(firstPositions[evalId]),
    checkIndexes: () => (indexChecks += 1),
    logger: silentLogger,
  });
  return { guard, catchUps, repairs, indexChecks: () => indexChecks };
}

describe('read guard', () => {
  it('refuses a list whose index differed from its count, and asks for the indexes to be checked', () => {
    const { guard, indexChecks } = guardOver(10n);
    guard.reportDamagedIndexes([]);
    expect(indexChecks()).to.equal(0);
    expect(() => guard.reportDamagedIndexes([0, 3])).to.throw(UnavailableError, /partition\(s\) 0, 3 lost members/);
    expect(indexChecks()).to.equal(1);
  });

  it('passes a read whose checkpoint is at or above what the replica applied', () => {
    const { guard, catchUps } = guardOver(10n);
    guard.beforeRead()(10n);
    guard.beforeRead()(11n);
    expect(catchUps).to.deep.equal([]);
  });

  it('measures a read by what was applied when it was sent: a step landing before the check is no loss', () => {
    let applied = 10n;
    const guard = createReadGuard({
      projection: {
        status: () => ({ checkpoint: applied, stalled: undefined }),
        requestCatchUp: () => undefined,
        repair: () => undefined,
      },
      firstPositionOf: () => Promise.resolve(undefined),
      checkIndexes: () => undefined,
      logger: silentLogger,
    });
    const fresh = guard.beforeRead();
    applied = 11n; // the projector applied the next step while the read was in flight
    fresh(10n);
    expect(() => guard.beforeRead()(10n)).to.throw(UnavailableError, /Redis lost data/);
  });

  it('refuses a read whose checkpoint went below what the replica applied, and asks for a catch-up', () => {
    const { guard, catchUps } = guardOver(10n);
    expect(() => guard.beforeRead()(0n))
      .to.throw(UnavailableError)
      .with.property('message')
      .that.contains('Redis lost data');
    expect(catchUps).to.have.length(1);
  });

  it('lets NOT_FOUND stand for an id the log does not have, or has only past the checkpoint', async () => {
    const { guard, repairs } = guardOver(10n, { later: 11n });
    await guard.confirmMissing('unknown', 10n);
    await guard.confirmMissing('later', 10n);
    expect(repairs).to.deep.equal([]);
  });

  it('turns a NOT_FOUND for an id the log has at or below the checkpoint into UNAVAILABLE and a repair', async () => {
    const { guard, repairs } = guardOver(10n, { lost: 4n, edge: 10n });
    for (const evalId of ['lost', 'edge']) {
      let refused: unknown;
      await guard.confirmMissing(evalId, 10n).catch((err: unknown) => (refused = err));
      expect(refused, evalId).to.be.instanceOf(UnavailableError);
    }
    expect(repairs).to.deep.equal([['lost'], ['edge']]);
  });

  it('refuses at once a min_position beyond read models that cannot move, and lets the others wait', () => {
    guardOver(10n).guard.checkReachable(50n);
    const { guard } = guardOver(10n, {}, 'Redis is out of memory');
    guard.checkReachable(10n);
    expect(() => guard.checkReachable(11n)).to.throw(UnavailableError, /cannot move: Redis is out of memory/);
  });

  it('repairs and refuses what a list found lost for certain, and lets a whole page pass', () => {
    const { guard, repairs } = guardOver(10n);
    guard.reportLost([]);
    expect(() => guard.reportLost(['x', 'y'])).to.throw(UnavailableError, /read models of 2 evaluation/);
    expect(repairs).to.deep.equal([['x', 'y']]);
  });
});
