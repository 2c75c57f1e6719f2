import { expect } from 'chai';
import type { RecordedEvent } from '../../../shared/domain';
import { eventIndexesByPartition, firstUnapplied } from '../../../services/query/projection/plan';
import { createKeyLayout, type KeyLayout } from '../../../services/query/read-models/keys';

/** Only the fields the grouping reads; the rest of the event does not matter to it. */
const event = (evalId: string, position: number): RecordedEvent =>
  ({ position: String(position), evalId }) as unknown as RecordedEvent;

/** A layout whose partition is spelled in the id ("e2" lives in partition 2), so tests can say where. */
const spelled: KeyLayout = { ...createKeyLayout('p', 3), partitionOf: (evalId) => Number(evalId.slice(1)) };

const entries = (map: Map<number, number[]>): [number, number[]][] => [...map.entries()].sort(([a], [b]) => a - b);

describe('eventIndexesByPartition (grouping a batch per partition)', () => {
  it('lists each partition its own event indexes, in batch order', () => {
    const events = [event('e2', 1), event('e0', 2), event('e2', 3), event('e1', 4), event('e0', 5)];
    expect(entries(eventIndexesByPartition(events, spelled))).to.deep.equal([
      [0, [1, 4]],
      [1, [3]],
      [2, [0, 2]],
    ]);
  });

  it('leaves out partitions without events, and is empty for an empty batch', () => {
    const grouped = eventIndexesByPartition([event('e1', 1), event('e1', 2)], spelled);
    expect(entries(grouped)).to.deep.equal([[1, [0, 1]]]);
    expect(grouped.has(0)).to.equal(false);
    expect(eventIndexesByPartition([], spelled).size).to.equal(0);
  });

  it("uses the layout's own partitioning", () => {
    const four = createKeyLayout('p', 4);
    const events = ['a', 'b', 'c', 'd', 'e', 'f', 'a'].map((id, i) => event(id, i + 1));
    const grouped = eventIndexesByPartition(events, four);
    const seen = [...grouped.values()].flat().sort((a, b) => a - b);
    expect(seen).to.deep.equal([0, 1, 2, 3, 4, 5, 6]);
    for (const [partition, indexes] of grouped) {
      for (const i of indexes) expect(four.partitionOf(events[i]?.evalId ?? '')).to.equal(partition);
    }
  });
});

describe('firstUnapplied (where a partition resumes in the batch)', () => {
  it('applies the whole batch when the checkpoint is below its first position', () => {
    expect(firstUnapplied(0n, 5n)).to.equal(0);
    expect(firstUnapplied(4n, 5n)).to.equal(0);
  });

  it('skips the events at or below the checkpoint', () => {
    expect(firstUnapplied(5n, 5n)).to.equal(1);
    expect(firstUnapplied(7n, 5n)).to.equal(3);
  });
});
