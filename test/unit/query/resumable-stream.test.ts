import { expect } from 'chai';
import { UnavailableError } from '../../../shared/errors';
import { createResumableStream, type ResumableStream } from '../../../services/query/live/resumable-stream';
import { createShutdown } from '../../../services/query/live/shutdown';

interface Item {
  readonly cursor: bigint;
  readonly match?: boolean;
  readonly final?: boolean;
}

type Message =
  { kind: 'update'; cursor: bigint } | { kind: 'caughtUp'; cursor: bigint } | { kind: 'progress'; cursor: bigint };

/** Collects what the stream sends; `next()` awaits the next message (no sleeps). */
function recorder() {
  const messages: Message[] = [];
  const waiters: ((m: Message) => void)[] = [];
  let gate: Promise<void> | undefined;
  const push = async (m: Message): Promise<void> => {
    if (gate !== undefined) await gate;
    messages.push(m);
    waiters.shift()?.(m);
  };
  let seen = 0;
  return {
    messages,
    output: {
      update: (item: Item) => push({ kind: 'update', cursor: item.cursor }),
      caughtUp: (cursor: bigint) => push({ kind: 'caughtUp', cursor }),
      progress: (cursor: bigint) => push({ kind: 'progress', cursor }),
    },
    /** Resolves with the next message not yet returned by next(). */
    next(): Promise<Message> {
      const m = messages[seen];
      seen += 1;
      if (m !== undefined) return Promise.resolve(m);
      return new Promise((resolve) => waiters.push(resolve));
    },
    /** Blocks every send (a client that does not read) until the returned function is called. */
    block(): () => void {
      let release: () => void = () => undefined;
      gate = new Promise((resolve) => (release = resolve));
      return () => {
        gate = undefined;
        release();
      };
    },
  };
}

const items = (from: number, to: number, extra: Partial<Item> = {}): Item[] =>
  Array.from({ length: to - from + 1 }, (_, i) => ({ cursor: BigInt(from + i), ...extra }));

function setup(options: {
  stored: Item[];
  start: bigint;
  replayFirst?: boolean;
  offeredThrough?: bigint;
  bufferLimit?: number;
  pageSize?: number;
  progressIntervalMs?: number;
  onRead?: (cursor: bigint) => void;
}) {
  const out = recorder();
  const client = new AbortController();
  const shutdown = createShutdown();
  const store = options.stored;
  let fallbacks = 0;
  let reads = 0;
  const stream: ResumableStream<Item> = createResumableStream<Item>({
    start: options.start,
    replayFirst: options.replayFirst ?? true,
    offeredThrough: options.offeredThrough,
    cursorOf: (i) => i.cursor,
    matches: (i) => i.match !== false,
    isFinal: (i) => i.final === true,
    readAfter: (cursor) => {
      reads += 1;
      const after = store.filter((i) => i.cursor > cursor);
      const page = after.slice(0, options.pageSize ?? 1000);
      const result = { items: page, complete: page.length === after.length };
      options.onRead?.(cursor);
      return Promise.resolve(result);
    },
    output: out.output,
    bufferLimit: options.bufferLimit ?? 100,
    progressIntervalMs: options.progressIntervalMs ?? 60_000,
    describe: (c) => `position ${c}`,
    signal: client.signal,
    shutdown: shutdown.shutdown,
    onFallback: () => (fallbacks += 1),
  });
  /** Stores an item and offers it live, as the projection + tail would. */
  const apply = (item: Item): void => {
    store.push(item);
    stream.offer(item);
  };
  return { out, stream, client, shutdown, store, apply, fallbacks: () => fallbacks, reads: () => reads };
}

async function take(out: ReturnType<typeof recorder>, n: number): Promise<Message[]> {
  const got: Message[] = [];
  for (let i = 0; i < n; i += 1) got.push(await out.next());
  return got;
}

const u = (c: number): Message => ({ kind: 'update', cursor: BigInt(c) });
const caught = (c: number): Message => ({ kind: 'caughtUp', cursor: BigInt(c) });

describe('resumable stream (replay → live seam)', () => {
  it('replays after the start, marks caught up, then goes live', async () => {
    const t = setup({ stored: items(1, 5), start: 2n });
    const run = t.stream.run();
    expect(await take(t.out, 4)).to.deep.equal([u(3), u(4), u(5), caught(5)]);
    t.apply({ cursor: 6n });
    t.apply({ cursor: 7n });
    expect(await take(t.out, 2)).to.deep.equal([u(6), u(7)]);
    t.client.abort();
    await run;
  });

  it('sends an item applied during the replay read exactly once, whichever side sees it', async () => {
    // 6 is stored and offered while the replay reads: the read does not include it (offered
    // after the snapshot) — then 7 is stored before the snapshot and offered after it.
    let first = true;
    const stored = items(1, 5);
    const t = setup({
      stored,
      start: 0n,
      onRead: () => {
        if (!first) return;
        first = false;
        t.apply({ cursor: 6n }); // not in the page being returned
      },
    });
    const run = t.stream.run();
    expect(await take(t.out, 7)).to.deep.equal([u(1), u(2), u(3), u(4), u(5), caught(5), u(6)]);
    // Now an item that is both in a re-read and in the buffer.
    t.apply({ cursor: 7n });
    expect(await t.out.next()).to.deep.equal(u(7));
    t.client.abort();
    await run;
    expect(t.out.messages.filter((m) => m.kind === 'update').map((m) => Number(m.cursor))).to.deep.equal([
      1, 2, 3, 4, 5, 6, 7,
    ]);
  });

  it('skips live items the replay already sent', async () => {
    const t = setup({ stored: items(1, 3), start: 0n });
    // Offered before run: they are in the store too, so the replay covers them.
    t.stream.offer({ cursor: 2n });
    t.stream.offer({ cursor: 3n });
    const run = t.stream.run();
    expect(await take(t.out, 4)).to.deep.equal([u(1), u(2), u(3), caught(3)]);
    t.apply({ cursor: 4n });
    expect(await t.out.next()).to.deep.equal(u(4));
    t.client.abort();
    await run;
  });

  it("keeps a slow client's buffer bounded and still delivers everything once, in order", async () => {
    const t = setup({ stored: [], start: 0n, replayFirst: false, offeredThrough: 0n, bufferLimit: 10, pageSize: 7 });
    const run = t.stream.run();
    expect(await t.out.next()).to.deep.equal(caught(0));
    const release = t.out.block();
    t.apply({ cursor: 1n }); // the stream is now stuck writing 1
    for (let c = 2; c <= 500; c += 1) {
      t.apply({ cursor: BigInt(c) });
      expect(t.stream.buffered).to.be.at.most(10);
    }
    expect(t.fallbacks()).to.be.greaterThan(0);
    release();
    const got = await take(t.out, 500);
    expect(got.map((m) => (m.kind === 'update' ? Number(m.cursor) : -1))).to.deep.equal(
      items(1, 500).map((i) => Number(i.cursor)),
    );
    t.client.abort();
    await run;
  });

  it('re-reads from the store when the live feed jumps', async () => {
    const t = setup({ stored: items(1, 3), start: 3n, replayFirst: false, offeredThrough: 3n });
    const run = t.stream.run();
    expect(await t.out.next()).to.deep.equal(caught(3));
    t.store.push({ cursor: 4n }); // applied, but its offer was lost
    t.apply({ cursor: 5n });
    expect(await take(t.out, 2)).to.deep.equal([u(4), u(5)]);
    t.client.abort();
    await run;
  });

  it('ends after a final item, live or replayed (the replay still marks caught up)', async () => {
    const live = setup({ stored: items(1, 2), start: 1n });
    const liveRun = live.stream.run();
    expect(await take(live.out, 2)).to.deep.equal([u(2), caught(2)]);
    live.apply({ cursor: 3n, final: true });
    expect(await live.out.next()).to.deep.equal(u(3));
    await liveRun;

    const replayed = setup({ stored: [...items(1, 2), { cursor: 3n, final: true }], start: 0n });
    await replayed.stream.run();
    expect(replayed.out.messages).to.deep.equal([u(1), u(2), u(3), caught(3)]);
  });

  it('filters items but moves the reached cursor, and reports it in progress messages', async () => {
    const t = setup({ stored: [], start: 10n, replayFirst: false, offeredThrough: 10n, progressIntervalMs: 5 });
    const run = t.stream.run();
    expect(await t.out.next()).to.deep.equal(caught(10));
    t.apply({ cursor: 11n, match: false });
    t.apply({ cursor: 12n });
    t.apply({ cursor: 13n, match: false });
    // Progress messages may come at any time; skip them until the update.
    let m = await t.out.next();
    while (m.kind === 'progress') m = await t.out.next();
    expect(m).to.deep.equal(u(12));
    do m = await t.out.next();
    while (!(m.kind === 'progress' && m.cursor === 13n));
    expect(t.stream.reached).to.equal(13n);
    t.client.abort();
    await run;
  });

  it('ends with UNAVAILABLE naming the resume point on shutdown, and quietly on cancel', async () => {
    const t = setup({ stored: items(1, 4), start: 0n });
    const run = t.stream.run();
    await take(t.out, 5);
    t.shutdown.begin();
    try {
      await run;
      expect.fail('expected UNAVAILABLE');
    } catch (err) {
      expect(err).to.be.instanceOf(UnavailableError);
      expect((err as Error).message).to.equal('server shutting down; resume from position 4');
    }
    const c = setup({ stored: [], start: 0n });
    const cancelled = c.stream.run();
    await c.out.next();
    c.client.abort();
    await cancelled;
  });
});
