import { expect } from 'chai';
import { DeadlineError, UnavailableError } from '../../../shared/errors';
import { EvaluationUpdate } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { changeOf, type Change } from '../../../services/query/live/change';
import { createChangeHub } from '../../../services/query/live/change-hub';
import { encodeOnce } from '../../../services/query/wire/encoded';
import { createShutdown } from '../../../services/query/live/shutdown';

const update = (position: number, evalId = 'e'): Change =>
  changeOf(
    encodeOnce(
      EvaluationUpdate,
      EvaluationUpdate.fromPartial({ position: String(position), revision: '1', evaluation: { evalId } }),
    ),
  );

function waitOptions(deadlineMs?: number) {
  const client = new AbortController();
  const shutdown = createShutdown();
  return {
    client,
    shutdown,
    options: {
      signal: client.signal,
      shutdown: shutdown.shutdown,
      deadline: deadlineMs === undefined ? undefined : new Date(Date.now() + deadlineMs),
    },
  };
}

describe('change hub', () => {
  it("dispatches to every-change listeners and to the evaluation's own, and unsubscribes", () => {
    const hub = createChangeHub();
    const all: string[] = [];
    const mine: string[] = [];
    const offAll = hub.onAny((c) => all.push(String(c.position)));
    const offMine = hub.onEvaluation('a', (c) => mine.push(String(c.position)));
    hub.publish(update(1, 'a'));
    hub.publish(update(2, 'b'));
    hub.publish(update(2, 'b')); // already dispatched: ignored
    expect(all).to.deep.equal(['1', '2']);
    expect(mine).to.deep.equal(['1']);
    expect(hub.appliedPosition).to.equal(2n);
    expect(hub.listenerCount).to.equal(2);
    offAll();
    offMine();
    expect(hub.listenerCount).to.equal(0);
  });

  it('releases position waiters when the position is applied', async () => {
    const hub = createChangeHub();
    hub.advanceTo(5n);
    await hub.waitForPosition(5n, waitOptions(1000).options);
    const order: number[] = [];
    const w7 = hub.waitForPosition(7n, waitOptions(5000).options).then(() => order.push(7));
    const w6 = hub.waitForPosition(6n, waitOptions(5000).options).then(() => order.push(6));
    hub.publish(update(6));
    await w6;
    expect(order).to.deep.equal([6]);
    hub.publish(update(7));
    await w7;
    expect(order).to.deep.equal([6, 7]);
  });

  it('fails a wait at its deadline, on shutdown, and resolves it on cancel', async () => {
    const hub = createChangeHub();
    try {
      await hub.waitForPosition(3n, waitOptions(20).options);
      expect.fail('expected a DeadlineError');
    } catch (err) {
      expect(err).to.be.instanceOf(DeadlineError);
      expect((err as Error).message).to.contain('position 3');
    }
    const s = waitOptions();
    const onShutdown = hub.waitForPosition(3n, s.options);
    s.shutdown.begin();
    try {
      await onShutdown;
      expect.fail('expected UNAVAILABLE');
    } catch (err) {
      expect(err).to.be.instanceOf(UnavailableError);
    }
    const c = waitOptions();
    const onCancel = hub.waitForPosition(3n, c.options);
    c.client.abort();
    await onCancel;
  });
});
