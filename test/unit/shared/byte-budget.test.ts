import { expect } from 'chai';
import { createByteBudget, type Reservation } from '../../../shared/grpc/byte-budget';

/** Lets every grant already made run its callbacks (grants resolve promises). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Reservations of `bytes` each, and the order in which they were admitted (by name). */
function reserveAll(
  budget: ReturnType<typeof createByteBudget>,
  sizes: Record<string, number>,
): { reservations: Record<string, Reservation>; admitted: string[] } {
  const admitted: string[] = [];
  const reservations: Record<string, Reservation> = {};
  for (const [name, bytes] of Object.entries(sizes)) {
    const reservation = budget.reserve(bytes);
    reservations[name] = reservation;
    void reservation.admitted.then(() => admitted.push(name));
  }
  return { reservations, admitted };
}

describe('byte budget (request admission)', () => {
  it('admits what fits at once and the rest in the order asked, a later small one not passing a waiting large one', async () => {
    const budget = createByteBudget(10);
    const { reservations, admitted } = reserveAll(budget, { a: 6, b: 6, c: 2, d: 1 });
    await settle();
    expect(admitted).to.deep.equal(['a']);
    expect(budget.reserved).to.equal(6);
    expect(budget.waiting).to.equal(3);

    reservations.a?.release();
    await settle();
    expect(admitted).to.deep.equal(['a', 'b', 'c', 'd']);
    expect(budget.reserved).to.equal(9);
    expect(budget.waiting).to.equal(0);
  });

  it('always admits one reservation, even one larger than the whole budget, and then only that one', async () => {
    const budget = createByteBudget(5);
    const { reservations, admitted } = reserveAll(budget, { huge: 8, tiny: 1 });
    await settle();
    expect(admitted).to.deep.equal(['huge']);
    expect(budget.peakReserved).to.equal(8);

    reservations.huge?.release();
    await settle();
    expect(admitted).to.deep.equal(['huge', 'tiny']);
    expect(budget.reserved).to.equal(1);
  });

  it('drops a reservation released while it waits: never admitted, and those behind it move up', async () => {
    const budget = createByteBudget(10);
    const { reservations, admitted } = reserveAll(budget, { a: 10, gone: 10, b: 10 });
    reservations.gone?.release();
    expect(budget.waiting).to.equal(1);
    reservations.a?.release();
    await settle();
    expect(admitted).to.deep.equal(['a', 'b']);
    expect(budget.reserved).to.equal(10);
  });

  it('gives bytes back once however often release is called, and shrinking frees the difference', async () => {
    const budget = createByteBudget(10);
    const { reservations, admitted } = reserveAll(budget, { a: 10, b: 7 });
    reservations.a?.shrinkTo(3);
    reservations.a?.shrinkTo(9); // asking for more is ignored
    await settle();
    expect(admitted).to.deep.equal(['a', 'b']);
    expect(budget.reserved).to.equal(10);

    reservations.a?.release();
    reservations.a?.release();
    reservations.a?.shrinkTo(0);
    expect(budget.reserved).to.equal(7);
    reservations.b?.release();
    expect(budget.reserved).to.equal(0);
    expect(budget.peakReserved).to.equal(10);
  });
});
