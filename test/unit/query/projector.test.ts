import { expect } from 'chai';
import type { RecordedEvent } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import { silentLogger } from '../../../shared/logging';
import type { ApplyResult, ProjectionApplier } from '../../../services/query/projection/applier';
import type { EventLog } from '../../../services/query/projection/event-log';
import { GapError } from '../../../services/query/projection/plan';
import { eventMark } from '../../../services/query/read-models/checkpoints';
import { createProjector, type Projector } from '../../../services/query/projection/projector';

const event = (position: number): RecordedEvent => ({
  position: String(position),
  evalId: `e${position}`,
  revision: '1',
  recordedAt: '2025-01-01T00:00:00.000Z',
  event: {
    type: 'EvaluationQueued',
    data: {
      codeHash: 'h',
      codeSize: 1,
      language: 'python',
      engine: 'docker',
      timeoutSeconds: 1,
      metadata: {},
      createdAt: '2025-01-01T00:00:00.000Z',
    },
  },
});

/** An in-memory log and read model: the applier applies the next positions, like the real one. */
function world(logSize: number, options: { marks?: boolean } = {}) {
  const log = Array.from({ length: logSize }, (_, i) => event(i + 1));
  // What checkpoints name when they record their event (read-models/checkpoints.ts).
  const markOf = (position: bigint): string | undefined =>
    options.marks === true && position > 0n ? eventMark(event(Number(position))) : undefined;
  let checkpoint = 0n;
  let horizon = 0n;
  let logFailures = 0;
  const reads: bigint[] = [];
  const waiters: { position: bigint; resolve: () => void }[] = [];
  const eventLog: EventLog = {
    readAfter(after, limit) {
      reads.push(after);
      if (logFailures > 0) {
        logFailures -= 1;
        return Promise.reject(new UnavailableError('PostgreSQL is unavailable (test)'));
      }
      const events = log.filter((e) => BigInt(e.position) > after).slice(0, limit);
      return Promise.resolve({ events, full: events.length === limit });
    },
    headPosition: () => Promise.resolve(BigInt(log.at(-1)?.position ?? horizon)),
    horizon: () => Promise.resolve(horizon),
    eventsOf: () => Promise.resolve([]),
    firstPositionOf: () => Promise.resolve(undefined),
    recordedAt: () => Promise.resolve(undefined),
  };
  const repaired: string[][] = [];
  const applier: ProjectionApplier = {
    skipTo(position) {
      if (checkpoint < position) checkpoint = position;
      return Promise.resolve();
    },
    repair(evalIds) {
      repaired.push([...evalIds]);
      return Promise.resolve(evalIds.length);
    },
    apply(events): Promise<ApplyResult> {
      const first = BigInt(events[0]?.position ?? '0');
      if (first > checkpoint + 1n) return Promise.reject(new GapError(first, checkpoint));
      let applied = 0;
      for (const e of events) {
        if (BigInt(e.position) === checkpoint + 1n) {
          checkpoint += 1n;
          applied += 1;
        }
      }
      for (const w of waiters.filter((w) => w.position <= checkpoint)) w.resolve();
      return Promise.resolve({ applied, checkpoint, partitionCheckpoints: [checkpoint], fromLog: 0 });
    },
  };
  return {
    log,
    reads,
    repaired,
    eventLog,
    applier,
    checkpoints: { readMarks: () => Promise.resolve([{ position: checkpoint, event: markOf(checkpoint) }]) },
    get checkpoint() {
      return checkpoint;
    },
    /** Simulates Redis losing its data. */
    reset: () => (checkpoint = 0n),
    /** Simulates retention: the events up to `position` leave the log. */
    archiveThrough: (position: number) => {
      horizon = BigInt(position);
      log.splice(
        0,
        log.findIndex((e) => BigInt(e.position) > horizon),
      );
    },
    failLogReads: (n: number) => (logFailures = n),
    appended: (position: number) => {
      const e = event(position);
      log.push(e);
      return e;
    },
    applied: (position: number) =>
      new Promise<void>((resolve) => {
        if (checkpoint >= BigInt(position)) resolve();
        else waiters.push({ position: BigInt(position), resolve });
      }),
  };
}

function projectorOf(w: ReturnType<typeof world>, serving: boolean[]): Projector {
  return createProjector({
    eventLog: w.eventLog,
    applier: w.applier,
    checkpoints: w.checkpoints,
    logger: silentLogger,
    catchUpIntervalMs: 60_000,
    rebuild: () => Promise.reject(new Error('no rebuild in this test')),
    batchSize: 10,
    onServingChange: (s) => serving.push(s),
  });
}

describe('projector', () => {
  let projector: Projector | undefined;
  afterEach(async () => {
    await projector?.stop();
    projector = undefined;
  });

  it('catches up from the log in batches at start and only then turns serving', async () => {
    const w = world(25);
    const serving: boolean[] = [];
    projector = projectorOf(w, serving);
    expect(projector.status().caughtUp).to.equal(false);
    projector.start();
    await projector.whenCaughtUp();
    expect(w.checkpoint).to.equal(25n);
    expect(w.reads).to.deep.equal([0n, 10n, 20n]);
    expect(serving).to.deep.equal([true]);
    expect(projector.status()).to.include({ caughtUp: true, checkpoint: 25n, head: 25n, catchUpEvents: 25n });
  });

  it('starts at the log horizon when it starts from nothing, and reads the log after it whole', async () => {
    const w = world(25);
    w.archiveThrough(12);
    const serving: boolean[] = [];
    projector = projectorOf(w, serving);
    projector.start();
    await projector.whenCaughtUp();
    expect(w.checkpoint).to.equal(25n);
    expect(w.reads, 'no read below the horizon').to.deep.equal([12n, 22n]);
    expect(serving).to.deep.equal([true]);
  });

  it('reads on from a checkpoint whose event left the log with retention, without taking the log for another', async () => {
    const w = world(12, { marks: true });
    projector = projectorOf(w, []);
    projector.start();
    await projector.whenCaughtUp();
    w.archiveThrough(12);
    w.appended(13);
    projector.notify(13n);
    await w.applied(13);
    expect(w.checkpoint).to.equal(13n);
  });

  it('rebuilds read models whose checkpoint fell below the horizon while it slept, instead of retrying the gap', async () => {
    const w = world(5);
    let rebuilds = 0;
    const replica = (): Projector =>
      createProjector({
        eventLog: w.eventLog,
        applier: w.applier,
        checkpoints: w.checkpoints,
        logger: silentLogger,
        catchUpIntervalMs: 60_000,
        rebuild: () => {
          rebuilds += 1;
          w.reset();
          return Promise.resolve();
        },
        batchSize: 10,
      });
    projector = replica();
    projector.start();
    await projector.whenCaughtUp();
    await projector.stop();
    // Asleep while the log grew and retention archived the first 12 events.
    for (let position = 6; position <= 15; position += 1) w.appended(position);
    w.archiveThrough(12);
    projector = replica();
    projector.start();
    await w.applied(15);
    expect(rebuilds).to.equal(1);
    expect(w.checkpoint).to.equal(15n);
  });

  it('reads what a pub/sub hint announces from the log, and ignores hints at or below the checkpoint', async () => {
    const w = world(3);
    projector = projectorOf(w, []);
    projector.start();
    await projector.whenCaughtUp();
    const readsBefore = w.reads.length;
    w.appended(4);
    projector.notify(4n);
    await w.applied(4);
    expect(w.reads.slice(readsBefore), 'the hint woke a read after the checkpoint').to.deep.equal([3n]);
    projector.notify(2n); // already applied: no read
    projector.notify(4n);
    w.appended(5); // its hint is lost
    w.appended(6);
    projector.notify(6n);
    await w.applied(6);
    expect(w.reads.slice(readsBefore)).to.deep.equal([3n, 4n]);
    await projector.stop();
    expect(projector.status()).to.include({ checkpoint: 6n, head: 6n, catchUpEvents: 6n });
  });

  it('believes nothing a forged hint says: the log is read, nothing is applied, and the head stays the log head', async () => {
    const w = world(3);
    projector = projectorOf(w, []);
    projector.start();
    await projector.whenCaughtUp();
    const readsBefore = w.reads.length;
    projector.notify(1_000_000n);
    // The read the hint woke finds nothing new; a later real change still applies.
    w.appended(4);
    projector.notify(4n);
    await w.applied(4);
    expect(w.reads.length).to.be.greaterThan(readsBefore);
    await projector.stop();
    expect(projector.status()).to.include({ checkpoint: 4n, head: 4n, caughtUp: true });
    expect(projector.status().behindSince).to.equal(undefined);
  });

  it('repairs what reads report lost between steps, each evaluation once however often reported', async () => {
    const w = world(3);
    projector = projectorOf(w, []);
    projector.start();
    await projector.whenCaughtUp();
    projector.repair(['e1', 'e2']);
    projector.repair(['e2']);
    w.appended(4);
    projector.notify(4n);
    await w.applied(4);
    await projector.stop();
    expect(w.repaired.flat().sort()).to.deep.equal(['e1', 'e2']);
  });

  it('retries with backoff while the log is unavailable, serving only once caught up', async () => {
    const w = world(5);
    w.failLogReads(2);
    const serving: boolean[] = [];
    projector = projectorOf(w, serving);
    projector.start();
    await projector.whenCaughtUp();
    expect(w.checkpoint).to.equal(5n);
    expect(w.reads.filter((r) => r === 0n).length).to.equal(3);
    expect(serving).to.deep.equal([true]);
  });

  it('stops serving when the read models go backwards (Redis lost data), and serves again once rebuilt', async () => {
    const w = world(8);
    const serving: boolean[] = [];
    projector = projectorOf(w, serving);
    projector.start();
    await projector.whenCaughtUp();
    w.reset();
    projector.requestCatchUp('test');
    await w.applied(8);
    await projector.whenCaughtUp();
    expect(serving).to.deep.equal([true, false, true]);
  });
});
