import { expect } from 'chai';
import { createAdmission } from '../../../services/command/application/admission';
import { DeadlineError, UnavailableError } from '../../../shared/errors';
import { deferred, type Deferred } from './in-memory-ports';

/** A clock the test moves. */
function manualClock(start = 1_000_000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** Work the test ends itself, recording when it started. */
function heldWork(started: string[], name: string): { work: () => Promise<string>; done: Deferred<void> } {
  const done = deferred();
  return {
    done,
    work: async () => {
      started.push(name);
      await done.promise;
      return name;
    },
  };
}

/** Lets every settled promise's continuations run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('command admission', () => {
  it('runs commands at once up to the limit, queues the rest, and starts them in arrival order as places free', async () => {
    const clock = manualClock();
    const admission = createAdmission({ maxInProgress: 2, maxQueued: 10 }, clock.now);
    const started: string[] = [];
    const works = ['a', 'b', 'c', 'd'].map((name) => heldWork(started, name));
    const results = works.map((w) => admission.admit(w.work));
    await settle();
    expect(started).to.deep.equal(['a', 'b']);
    expect(admission.load()).to.include({ inProgress: 2, queued: 2 });

    works[1]!.done.resolve();
    await settle();
    expect(started).to.deep.equal(['a', 'b', 'c']);
    expect(admission.load()).to.include({ inProgress: 2, queued: 1 });

    works[0]!.done.resolve();
    works[2]!.done.resolve();
    works[3]!.done.resolve();
    expect(await Promise.all(results)).to.deep.equal(['a', 'b', 'c', 'd']);
    expect(admission.load()).to.include({ inProgress: 0, queued: 0 });
  });

  it('never runs more than the limit at once, however many arrive together', async () => {
    const admission = createAdmission({ maxInProgress: 3, maxQueued: 1000 });
    let running = 0;
    let most = 0;
    const work = async (): Promise<void> => {
      running += 1;
      most = Math.max(most, running);
      await settle();
      running -= 1;
    };
    await Promise.all(Array.from({ length: 200 }, () => admission.admit(work)));
    expect(most).to.equal(3);
  });

  it('refuses one more than the queue holds at once, with UNAVAILABLE and a retry delay, after beforeRefusal', async () => {
    const clock = manualClock();
    const admission = createAdmission({ maxInProgress: 1, maxQueued: 1 }, clock.now);
    const started: string[] = [];
    const first = heldWork(started, 'first');
    const running = admission.admit(first.work);
    const waiting = admission.admit(heldWork(started, 'waiting').work);
    let cleanedUp = false;
    const err = await rejection(
      admission.admit(heldWork(started, 'refused').work, {
        beforeRefusal: () => Promise.resolve(void (cleanedUp = true)),
      }),
    );

    expect(err).to.be.instanceOf(UnavailableError);
    expect((err as Error).message).to.match(/overloaded: 1 commands in progress .* 1 waiting \(MAX_QUEUED_COMMANDS\)/);
    expect((err as UnavailableError).retryAfterMs).to.be.greaterThan(0);
    expect(cleanedUp).to.equal(true);
    expect(started).to.deep.equal(['first']);
    expect(admission.load()).to.include({ shedQueueFull: 1, shedDeadline: 0 });
    first.done.resolve();
    await running;
    void waiting;
  });

  it('refuses at once a command whose expected wait outlasts its deadline, saying how long the wait is', async () => {
    const clock = manualClock();
    const admission = createAdmission({ maxInProgress: 2, maxQueued: 100 }, clock.now);
    // One command that took 100 ms gives the estimate: with 2 in progress, 50 ms per place ahead.
    await admission.admit(() => Promise.resolve(clock.advance(100)));
    const started: string[] = [];
    const held = [heldWork(started, 'a'), heldWork(started, 'b')];
    const running = held.map((w) => admission.admit(w.work));
    const queued = [1, 2, 3].map((i) => admission.admit(heldWork(started, `q${i}`).work));

    // Three ahead: about (3 + 1) × 50 = 200 ms.
    const err = await rejection(
      admission.admit(heldWork(started, 'late').work, { deadline: new Date(clock.now() + 150) }),
    );
    expect(err).to.be.instanceOf(UnavailableError);
    expect((err as Error).message).to.match(/3 commands are waiting ahead of this one, about 200 ms/);
    expect((err as UnavailableError).retryAfterMs).to.equal(200);
    expect(admission.load()).to.include({ shedQueueFull: 0, shedDeadline: 1 });

    // The same wait within its deadline is queued, not refused.
    const patient = admission.admit(heldWork(started, 'patient').work, { deadline: new Date(clock.now() + 250) });
    expect(admission.load().queued).to.equal(4);
    for (const w of held) w.done.resolve();
    await Promise.all(running);
    void queued;
    void patient;
  });

  it('refuses no waiting command for its deadline before any command has finished (no estimate yet)', async () => {
    const clock = manualClock();
    const admission = createAdmission({ maxInProgress: 1, maxQueued: 10 }, clock.now);
    const started: string[] = [];
    const first = heldWork(started, 'first');
    const running = admission.admit(first.work);
    const queued = admission.admit(() => Promise.resolve('second'), { deadline: new Date(clock.now() + 1) });
    expect(admission.load().queued).to.equal(1);
    first.done.resolve();
    await running;
    expect(await queued).to.equal('second');
  });

  it('ends a command whose deadline passes while it waits with DEADLINE_EXCEEDED, never running it, and starts the next', async () => {
    const clock = manualClock();
    const admission = createAdmission({ maxInProgress: 1, maxQueued: 10 }, clock.now);
    const started: string[] = [];
    const first = heldWork(started, 'first');
    const running = admission.admit(first.work);
    let cleanedUp = false;
    const expiring = admission.admit(heldWork(started, 'expiring').work, {
      deadline: new Date(clock.now() + 50),
      beforeRefusal: () => Promise.resolve(void (cleanedUp = true)),
    });
    const next = admission.admit(() => {
      started.push('next');
      return Promise.resolve('next');
    });
    clock.advance(60);
    first.done.resolve();

    const err = await rejection(expiring);
    expect(err).to.be.instanceOf(DeadlineError);
    expect(cleanedUp).to.equal(true);
    expect(admission.load().shedDeadline).to.equal(1);
    expect(await next).to.equal('next');
    await running;
    expect(started).to.deep.equal(['first', 'next']);
  });

  it('drops a waiting command at its deadline, not only when its turn comes, and no longer counts it as waiting', async () => {
    const clock = manualClock();
    const admission = createAdmission({ maxInProgress: 1, maxQueued: 10 }, clock.now);
    const started: string[] = [];
    const first = heldWork(started, 'first');
    const running = admission.admit(first.work);
    let cleanedUp = false;
    const expiring = admission.admit(heldWork(started, 'expiring').work, {
      deadline: new Date(clock.now() + 20),
      beforeRefusal: () => Promise.resolve(void (cleanedUp = true)),
    });
    const later = admission.admit(() => Promise.resolve('later'));
    expect(admission.load()).to.include({ inProgress: 1, queued: 2 });

    // The first is still in progress: the deadline alone ends the wait.
    expect(await rejection(expiring)).to.be.instanceOf(DeadlineError);
    expect(cleanedUp).to.equal(true);
    expect(admission.load()).to.include({ inProgress: 1, queued: 1, shedDeadline: 1 });

    first.done.resolve();
    await running;
    expect(await later).to.equal('later');
    expect(started).to.deep.equal(['first']);
    expect(admission.load()).to.include({ inProgress: 0, queued: 0 });
  });

  it('drops a waiting command when its caller goes away, never running it, and the next one takes its turn', async () => {
    const admission = createAdmission({ maxInProgress: 1, maxQueued: 10 });
    const started: string[] = [];
    const first = heldWork(started, 'first');
    const running = admission.admit(first.work);
    const caller = new AbortController();
    const abandoned = admission.admit(heldWork(started, 'abandoned').work, { signal: caller.signal });
    const next = admission.admit(() => {
      started.push('next');
      return Promise.resolve('next');
    });
    caller.abort();

    expect(await rejection(abandoned)).to.be.instanceOf(UnavailableError);
    // Not shed: nobody was refused, the caller left.
    expect(admission.load()).to.deep.equal({ inProgress: 1, queued: 1, shedQueueFull: 0, shedDeadline: 0 });
    first.done.resolve();
    await running;
    expect(await next).to.equal('next');
    expect(started).to.deep.equal(['first', 'next']);
    // A caller that goes away once its command runs changes nothing in the count.
    const late = new AbortController();
    const ran = admission.admit(() => Promise.resolve('ran'), { signal: late.signal });
    late.abort();
    expect(await ran).to.equal('ran');
    expect(admission.load()).to.include({ inProgress: 0, queued: 0 });
  });

  it('counts a waiting command whose call is cancelled at its deadline as shed for the deadline, not as gone', async () => {
    const clock = manualClock();
    const admission = createAdmission({ maxInProgress: 1, maxQueued: 10 }, clock.now);
    const first = heldWork([], 'first');
    const running = admission.admit(first.work);
    const call = new AbortController();
    const waiting = admission.admit(() => Promise.resolve('never'), {
      deadline: new Date(clock.now() + 50),
      signal: call.signal,
    });
    // grpc-js cancels the call at its deadline, before the queue's own timer fires.
    clock.advance(50);
    call.abort();
    expect(await rejection(waiting)).to.be.instanceOf(DeadlineError);
    expect(admission.load()).to.include({ shedDeadline: 1, shedQueueFull: 0, queued: 0 });
    first.done.resolve();
    await running;
  });

  it('frees the place of a command that fails, for the next in the queue', async () => {
    const admission = createAdmission({ maxInProgress: 1, maxQueued: 10 });
    const failing = admission.admit(() => Promise.reject(new Error('boom')));
    const next = admission.admit(() => Promise.resolve('ran'));
    expect(((await rejection(failing)) as Error).message).to.equal('boom');
    expect(await next).to.equal('ran');
    expect(admission.load()).to.include({ inProgress: 0, queued: 0 });
  });
});
