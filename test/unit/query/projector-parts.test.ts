import { expect } from 'chai';
import { silentLogger, type Logger } from '../../../shared/logging';
import { backoffDelayMs, createServingState, logsFailure } from '../../../services/query/projection/projector';
import { createWaker } from '../../../services/query/live/waker';

describe('projector parts', () => {
  describe('backoff', () => {
    it('doubles from 100 ms and stops at 5 s', () => {
      expect([1, 2, 3, 4, 5, 6, 7, 8, 100].map(backoffDelayMs)).to.deep.equal([
        100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000,
      ]);
    });

    it('logs the first failure and then every 20th', () => {
      const logged = Array.from({ length: 60 }, (_, i) => i + 1).filter(logsFailure);
      expect(logged).to.deep.equal([1, 20, 40, 60]);
    });
  });

  describe('serving state', () => {
    function serving() {
      let now = 1000;
      const changes: boolean[] = [];
      const infos: string[] = [];
      const logger: Logger = { ...silentLogger, info: (msg) => infos.push(msg) };
      const state = createServingState({ logger, clock: () => now, onServingChange: (s) => changes.push(s) });
      return { state, changes, infos, tick: (ms: number) => (now += ms) };
    }

    it('serves once the checkpoint reaches the target, and tells it once', async () => {
      const { state, changes, infos } = serving();
      expect(state.started).to.equal(false);
      state.setCheckpoint(5n); // no target yet: not serving
      expect(state.caughtUp).to.equal(false);
      state.startServingAt(10n);
      expect(state.started).to.equal(true);
      expect(state.head).to.equal(10n);
      let resolved = false;
      const waiting = state.whenCaughtUp().then(() => (resolved = true));
      state.setCheckpoint(9n);
      await Promise.resolve();
      expect([state.caughtUp, resolved, changes]).to.deep.equal([false, false, []]);
      state.setCheckpoint(10n);
      await waiting;
      state.setCheckpoint(11n);
      expect(state.caughtUp).to.equal(true);
      expect(changes).to.deep.equal([true]);
      expect(infos).to.deep.equal(['projection caught up; serving']);
      await state.whenCaughtUp(); // at once when already
    });

    it('keeps the head at or above the checkpoint, and never lowers it', () => {
      const { state } = serving();
      state.seeHead(7n);
      state.seeHead(3n);
      expect(state.head).to.equal(7n);
      state.setCheckpoint(9n);
      expect(state.head).to.equal(9n);
    });

    it('knows since when the checkpoint has been behind the head', () => {
      const { state, tick } = serving();
      expect(state.status().behindSince).to.equal(undefined);
      state.seeHead(5n);
      expect(state.status().behindSince).to.equal(1000);
      tick(500);
      state.setCheckpoint(3n); // still behind: since the first time
      state.seeHead(6n);
      expect(state.status().behindSince).to.equal(1000);
      state.setCheckpoint(6n);
      expect(state.status().behindSince).to.equal(undefined);
      state.seeHead(7n);
      expect(state.status().behindSince).to.equal(1500);
    });

    it('after losing data stops serving until the log head it is given is reached', () => {
      const { state, changes } = serving();
      state.startServingAt(4n);
      state.setCheckpoint(4n);
      state.seeHead(8n);
      state.stopServing(8n);
      expect(state.caughtUp).to.equal(false);
      state.stopServing(8n); // not serving: nothing more to tell
      state.setCheckpoint(7n);
      expect(state.caughtUp).to.equal(false);
      state.setCheckpoint(8n);
      expect(state.caughtUp).to.equal(true);
      expect(changes).to.deep.equal([true, false, true]);
    });

    it('takes a lower log head when the log went backwards, instead of waiting for the old one', () => {
      const { state, changes } = serving();
      state.startServingAt(10n);
      state.setCheckpoint(10n);
      state.stopServing(6n);
      expect(state.status().head).to.equal(6n);
      state.setCheckpoint(6n);
      expect(state.caughtUp).to.equal(true);
      expect(changes).to.deep.equal([true, false, true]);
    });

    it('is unhealthy while stalled even when caught up, and healthy again once the read models move', () => {
      const { state, changes } = serving();
      state.startServingAt(2n);
      state.setCheckpoint(2n);
      state.setStalled('Redis is out of memory');
      state.setStalled('Redis is out of memory'); // the same reason: nothing more to tell
      expect(state.status()).to.include({ caughtUp: true, stalled: 'Redis is out of memory' });
      state.setStalled(undefined);
      expect(state.status().stalled).to.equal(undefined);
      expect(changes).to.deep.equal([true, false, true]);
    });

    it('counts catch-up events', () => {
      const { state } = serving();
      state.countCatchUp(3);
      state.countCatchUp(0);
      state.countCatchUp(4);
      expect(state.status().catchUpEvents).to.equal(7n);
    });
  });

  describe('waker', () => {
    it('resolves false when the time runs out', async () => {
      const waker = createWaker();
      expect(await waker.sleep(1)).to.equal(false);
      waker.wake(); // no sleep in progress: nothing happens
    });

    it('resolves true when woken, long before the time runs out', async () => {
      const waker = createWaker();
      const sleeping = waker.sleep(60_000);
      waker.wake();
      expect(await sleeping).to.equal(true);
    });

    it('ends an untimed wait on the next wake, and only that one', async () => {
      const waker = createWaker();
      let woken = 0;
      const waiting = waker.idle().then(() => (woken += 1));
      waker.wake();
      waker.wake(); // nobody waits any more
      await waiting;
      expect(woken).to.equal(1);
    });
  });
});
