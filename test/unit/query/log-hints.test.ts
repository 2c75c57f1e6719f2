import { expect } from 'chai';
import { listenForWakeUps } from '../../../services/query/handlers/wait-evaluation';
import { createChangeHub } from '../../../services/query/live/change-hub';
import { createLogHints } from '../../../services/query/live/log-hints';
import { createShutdown } from '../../../services/query/live/shutdown';

describe('log hints: live log followers woken by the command side', () => {
  it("calls the listeners of one evaluation's stream on its hints only, until they unsubscribe", () => {
    const hints = createLogHints();
    const heard: string[] = [];
    const offA = hints.on('a', 'stdout', () => heard.push('a1'));
    hints.on('a', 'stdout', () => heard.push('a2'));
    hints.on('a', 'stderr', () => heard.push('a-err'));
    hints.on('b', 'stdout', () => heard.push('b'));
    hints.hint('a', 'stdout');
    hints.hint('c', 'stdout'); // nobody follows it
    offA();
    offA();
    hints.hint('a', 'stdout');
    hints.hint('a', 'stderr');
    expect(heard).to.deep.equal(['a1', 'a2', 'a2', 'a-err']);
  });

  it("wakes a follower's wait as a change of the hub would; closing the wait unsubscribes it", async () => {
    const hints = createLogHints();
    const hub = createChangeHub();
    const wakeUps = listenForWakeUps(
      { hub, shutdown: createShutdown().shutdown },
      'e-1',
      new AbortController().signal,
      Date.now() + 60_000,
      Date.now,
      { on: (changed) => hints.on('e-1', 'stdout', changed) },
    );
    const woken = wakeUps.next();
    hints.hint('e-2', 'stdout');
    hints.hint('e-1', 'stdout');
    expect(await woken).to.equal('changed');
    expect(wakeUps.takeChanged()).to.equal(true);
    wakeUps.close();
    let called = false;
    hints.on('e-1', 'stdout', () => (called = true));
    hints.hint('e-1', 'stdout'); // the closed wait's listener is gone: only the new one hears it
    expect(called).to.equal(true);
    expect(wakeUps.takeChanged()).to.equal(false);
    expect(hub.listenerCount).to.equal(0);
  });
});
