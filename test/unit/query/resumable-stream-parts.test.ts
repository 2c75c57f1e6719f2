import { expect } from 'chai';
import {
  createLiveBuffer,
  mustReadAgain,
  type LiveBuffer,
  type LiveBufferOptions,
} from '../../../services/query/live/resumable-stream';

interface Item {
  readonly cursor: bigint;
  readonly keep?: boolean;
}

const item = (cursor: number, keep = true): Item => ({ cursor: BigInt(cursor), keep });

function buffer(options: Partial<LiveBufferOptions<Item>> = {}): { live: LiveBuffer<Item>; fallbacks: () => number } {
  let fallbacks = 0;
  const live = createLiveBuffer<Item>({
    cursorOf: (i) => i.cursor,
    keeps: (i) => i.keep !== false,
    limit: 10,
    offeredThrough: 4n,
    catchUpFirst: false,
    onFallback: () => (fallbacks += 1),
    ...options,
  });
  return { live, fallbacks: () => fallbacks };
}

const drain = (live: LiveBuffer<Item>): bigint[] => {
  const out: bigint[] = [];
  for (let i = live.shift(); i !== undefined; i = live.shift()) out.push(i.cursor);
  return out;
};

describe('createLiveBuffer (the live side of the seam)', () => {
  it('holds consecutive cursors in order', () => {
    const { live, fallbacks } = buffer();
    expect([5, 6, 7].map((c) => live.offer(item(c)))).to.deep.equal([true, true, true]);
    expect(live.size).to.equal(3);
    expect(live.lastOffered).to.equal(7n);
    expect(drain(live)).to.deep.equal([5n, 6n, 7n]);
    expect(fallbacks()).to.equal(0);
    expect(live.mustCatchUp).to.equal(false);
  });

  it('ignores cursors offered already, and says so', () => {
    const { live } = buffer();
    expect(live.offer(item(5))).to.equal(true);
    expect(live.offer(item(5))).to.equal(false);
    expect(live.offer(item(3))).to.equal(false);
    expect(live.size).to.equal(1);
    expect(live.lastOffered).to.equal(5n);
  });

  it('takes any first cursor when nothing was offered before, then checks the next', () => {
    const { live, fallbacks } = buffer({ offeredThrough: undefined });
    expect(live.offer(item(100))).to.equal(true);
    expect(fallbacks()).to.equal(0);
    expect(live.offer(item(102))).to.equal(true);
    expect(fallbacks()).to.equal(1);
  });

  it('drops the buffer and asks for a catch-up on a jump', () => {
    const { live, fallbacks } = buffer();
    live.offer(item(5));
    expect(live.offer(item(7))).to.equal(true);
    expect(fallbacks()).to.equal(1);
    expect(live.mustCatchUp).to.equal(true);
    expect(live.size).to.equal(0);
    expect(live.lastOffered).to.equal(7n);
  });

  it('drops the buffer one item past the limit, not at it', () => {
    const { live, fallbacks } = buffer({ limit: 2 });
    live.offer(item(5));
    live.offer(item(6));
    expect(live.size).to.equal(2);
    expect(fallbacks()).to.equal(0);
    live.offer(item(7));
    expect(fallbacks()).to.equal(1);
    expect(live.size).to.equal(0);
    expect(live.mustCatchUp).to.equal(true);
  });

  it('holds only kept items, but every offer moves the offered cursor', () => {
    const { live } = buffer();
    live.offer(item(5, false));
    live.offer(item(6));
    live.offer(item(7, false));
    expect(live.lastOffered).to.equal(7n);
    expect(drain(live)).to.deep.equal([6n]);
  });

  it('holds nothing while a catch-up is due, until one begins', () => {
    const { live } = buffer({ catchUpFirst: true });
    live.offer(item(5));
    expect(live.size).to.equal(0);
    expect(live.mustCatchUp).to.equal(true);
    expect(live.beginCatchUp()).to.equal(5n);
    expect(live.mustCatchUp).to.equal(false);
    live.offer(item(6));
    expect(live.size).to.equal(1);
  });

  it('clears what it holds when a catch-up begins, and keeps it when one is required again', () => {
    const { live } = buffer();
    live.offer(item(5));
    expect(live.beginCatchUp()).to.equal(5n);
    expect(live.size).to.equal(0);
    live.offer(item(6));
    live.requireCatchUp();
    expect(live.mustCatchUp).to.equal(true);
    expect(live.size).to.equal(1);
  });

  it('reports reached: the offered cursor when nothing is held or due, else the sent one', () => {
    const { live } = buffer();
    expect(live.reached(2n)).to.equal(4n); // offeredThrough
    expect(live.reached(6n)).to.equal(6n); // sent is ahead
    live.offer(item(5, false));
    expect(live.reached(4n)).to.equal(5n);
    live.offer(item(6));
    expect(live.reached(4n)).to.equal(4n); // 6 is held, not sent
    drain(live);
    live.requireCatchUp();
    expect(live.reached(4n)).to.equal(4n); // the store has to be read first
    expect(buffer({ offeredThrough: undefined }).live.reached(3n)).to.equal(3n);
  });
});

describe('mustReadAgain (when a catch-up is not done)', () => {
  it('reads again while the store has more', () => {
    expect(mustReadAgain(false, undefined, 10n)).to.equal(true);
    expect(mustReadAgain(false, 5n, 10n)).to.equal(true);
  });

  it('reads again until the read reaches where live items were when the buffer was dropped', () => {
    expect(mustReadAgain(true, 11n, 10n)).to.equal(true);
    expect(mustReadAgain(true, 10n, 10n)).to.equal(false);
    expect(mustReadAgain(true, 9n, 10n)).to.equal(false);
    expect(mustReadAgain(true, undefined, 10n)).to.equal(false);
  });
});
