/**
 * Seeded mutations of protobuf messages, for fuzzing: the same seed gives the same bytes, so a
 * failure is replayed by its seed. Each mutation keeps most of a valid message (so that it gets
 * past the first byte) and breaks it in one of the ways hostile clients do.
 */

export interface Mutator {
  readonly name: string;
  mutate(message: Buffer, random: () => number): Buffer;
}

const int = (random: () => number, below: number): number => Math.floor(random() * below);

function varint(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** A field of `fieldNumber` with wire type 2 (bytes) holding `payload`. */
function lengthDelimited(fieldNumber: number, payload: Buffer): Buffer {
  return Buffer.concat([varint((fieldNumber << 3) | 2), varint(payload.length), payload]);
}

export const MUTATORS: readonly Mutator[] = [
  {
    name: 'flip bits',
    mutate(message, random) {
      const out = Buffer.from(message);
      for (let i = 0; i < 1 + int(random, 8) && out.length > 0; i += 1) {
        const at = int(random, out.length);
        out[at] = (out[at] as number) ^ (1 << int(random, 8));
      }
      return out;
    },
  },
  {
    name: 'random bytes over a range',
    mutate(message, random) {
      const out = Buffer.from(message);
      const from = int(random, Math.max(1, out.length));
      for (let i = from; i < Math.min(out.length, from + 1 + int(random, 16)); i += 1) out[i] = int(random, 256);
      return out;
    },
  },
  {
    name: 'truncated',
    mutate: (message, random) => message.subarray(0, int(random, Math.max(1, message.length))),
  },
  {
    name: 'a length that lies',
    mutate: (message, random) =>
      Buffer.concat([message, varint(((1 + int(random, 20)) << 3) | 2), varint(1 + int(random, 1 << 30))]),
  },
  {
    name: 'a known field with the wrong wire type',
    mutate: (message, random) => {
      const field = 1 + int(random, 12);
      const wireType = [0, 1, 5, 3][int(random, 4)] as number;
      return Buffer.concat([message, varint((field << 3) | wireType), Buffer.alloc(8, 0xff)]);
    },
  },
  {
    name: 'invalid UTF-8 in every string-like field',
    mutate: (message, random) => {
      const field = 1 + int(random, 12);
      return Buffer.concat([message, lengthDelimited(field, Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0xed, 0xa0, 0x80]))]);
    },
  },
  {
    name: 'a huge repeated field',
    mutate: (message, random) => {
      const field = 1 + int(random, 12);
      const one = lengthDelimited(field, Buffer.from('x'));
      return Buffer.concat([message, ...Array.from({ length: 20_000 + int(random, 20_000) }, () => one)]);
    },
  },
  {
    name: 'a message nested 10,000 deep',
    mutate: (message, random) => {
      let nested: Buffer = Buffer.alloc(0);
      const field = 1 + int(random, 12);
      for (let i = 0; i < 10_000; i += 1) nested = lengthDelimited(field, nested);
      return Buffer.concat([message, nested]);
    },
  },
  {
    name: 'an unknown group that never ends',
    mutate: (message, random) => Buffer.concat([message, varint(((100 + int(random, 1000)) << 3) | 3)]),
  },
  {
    name: 'spliced with itself',
    mutate: (message, random) => {
      const cut = int(random, Math.max(1, message.length));
      return Buffer.concat([message.subarray(0, cut), message, message.subarray(cut)]);
    },
  },
];

/** One mutation of `message`, chosen by `random`; its name says which. */
export function mutate(message: Buffer, random: () => number): { name: string; bytes: Buffer } {
  const mutator = MUTATORS[int(random, MUTATORS.length)] as Mutator;
  return { name: mutator.name, bytes: mutator.mutate(message, random) };
}
