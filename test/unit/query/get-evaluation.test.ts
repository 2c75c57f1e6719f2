import { ANONYMOUS_ADMIN } from '../../../shared/auth';
import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import { NotFoundError, UnavailableError } from '../../../shared/errors';
import { Evaluation, EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { silentLogger } from '../../../shared/logging';
import { createGetEvaluation } from '../../../services/query/handlers/get-evaluation';
import { createChangeHub } from '../../../services/query/live/change-hub';
import { createOpenCalls } from '../../../services/query/live/open-calls';
import { createReadGuard } from '../../../services/query/live/read-guard';
import { createShutdown } from '../../../services/query/live/shutdown';

/**
 * A replica replaying into a Redis that was just flushed: its applied position is back at the
 * (empty) checkpoint, so the freshness check passes, while its tail already passed the position
 * the client asks for. The evaluation was submitted at position 5.
 */
function replicaRefillingAfterFlush() {
  const hub = createChangeHub();
  hub.advanceTo(10n);
  const repairs: string[][] = [];
  const guard = createReadGuard({
    projection: {
      status: () => ({ checkpoint: 0n, stalled: undefined }),
      requestCatchUp: () => undefined,
      repair: (evalIds) => void repairs.push([...evalIds]),
    },
    // 'theirs' is another tenant's: the log has it, the caller must not learn so.
    firstPositionOf: (evalId) => Promise.resolve(evalId === 'mine' ? 5n : evalId === 'theirs' ? 0n : undefined),
    checkIndexes: () => undefined,
    logger: silentLogger,
  });
  const getEvaluation = createGetEvaluation({
    records: {
      get: () => Promise.resolve({ record: undefined, checkpoint: 0n }),
      getMany: () => Promise.resolve([]),
    },
    // 'retired' left the read models: PostgreSQL (or the archive) has it, ended. 'mine' is the
    // caller's, which the read models should hold; anything else is none of the caller's.
    retired: {
      evaluation: (_tenant, evalId) =>
        Promise.resolve(
          evalId === 'retired'
            ? Evaluation.fromPartial({ evalId, status: EvaluationStatus.EVALUATION_STATUS_COMPLETED, revision: '3' })
            : evalId === 'mine'
              ? 'held'
              : 'unknown',
        ),
      eventsOf: () => Promise.resolve([]),
    },
    guard,
    openCalls: createOpenCalls({ maxOpen: 10, maxOpenPerConnection: 10 }),
    hub,
    readiness: { ready: () => Promise.resolve() },
    shutdown: createShutdown().shutdown,
  });
  const context = {
    caller: ANONYMOUS_ADMIN,
    signal: new AbortController().signal,
    deadline: undefined,
    metadata: new Metadata(),
    peer: 'p',
  };
  return { getEvaluation, context, repairs };
}

describe('GetEvaluation with min_position over a Redis being refilled', () => {
  it('refuses (UNAVAILABLE) a read whose checkpoint is behind its min_position, instead of a stale NOT_FOUND', async () => {
    const { getEvaluation, context, repairs } = replicaRefillingAfterFlush();
    const refused = await getEvaluation({ evalId: 'mine', minPosition: '10' }, context).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).to.be.instanceOf(UnavailableError);
    expect((refused as Error).message).to.contain('behind the min_position 10');
    expect(repairs).to.deep.equal([]);
  });

  it('answers NOT_FOUND without min_position only for what the log does not have at the checkpoint', async () => {
    const { getEvaluation, context } = replicaRefillingAfterFlush();
    const unknown = await getEvaluation({ evalId: 'other' }, context).catch((err: unknown) => err);
    expect(unknown).to.be.instanceOf(NotFoundError);
    const notYet = await getEvaluation({ evalId: 'mine' }, context).catch((err: unknown) => err);
    expect(notYet).to.be.instanceOf(NotFoundError); // the truth at checkpoint 0, below its submit
  });

  it('answers an evaluation that left the read models from what PostgreSQL or the archive folds to, asking no repair', async () => {
    const { getEvaluation, context, repairs } = replicaRefillingAfterFlush();
    const { evaluation } = await getEvaluation({ evalId: 'retired' }, context);
    expect(evaluation.message).to.include({
      evalId: 'retired',
      status: EvaluationStatus.EVALUATION_STATUS_COMPLETED,
      revision: '3',
    });
    expect(repairs).to.deep.equal([]);
  });

  it("answers NOT_FOUND for another tenant's evaluation missing from Redis, without a repair or an UNAVAILABLE", async () => {
    const { getEvaluation, context, repairs } = replicaRefillingAfterFlush();
    const theirs = await getEvaluation({ evalId: 'theirs' }, context).catch((err: unknown) => err);
    expect(theirs).to.be.instanceOf(NotFoundError);
    expect(repairs).to.deep.equal([]);
  });
});
