/**
 * The primitive writes a projection step makes to one partition. Each read model says which
 * ops an event causes; the projector collects them per partition and hands them, with the
 * checkpoint compare-and-set, to one atomic Lua script (redis/apply-script.ts).
 */
export type WriteOp =
  | { readonly op: 'set'; readonly key: string; readonly value: Buffer }
  | { readonly op: 'zadd'; readonly key: string; readonly member: string }
  | { readonly op: 'zrem'; readonly key: string; readonly member: string }
  | { readonly op: 'rpush'; readonly key: string; readonly value: Buffer }
  /** Appends stream entry `<position>-0` with field `u`, trimming to the retention (MAXLEN ~). */
  | { readonly op: 'xadd'; readonly key: string; readonly position: string; readonly value: Buffer };

/** One partition's share of a projection step. */
export interface PartitionWrite {
  readonly partition: number;
  /** The checkpoint the partition must still have; the write is refused otherwise. */
  readonly expectedCheckpoint: bigint;
  readonly newCheckpoint: bigint;
  readonly ops: readonly WriteOp[];
}

export interface EncodedScriptCall {
  readonly keys: string[];
  readonly args: (string | Buffer)[];
}

const OP_CODES = { set: 'S', zadd: 'Z', zrem: 'R', rpush: 'L', xadd: 'X' } as const;

/**
 * Encodes a partition write as the KEYS and ARGV of the apply script. Every key is declared in
 * KEYS (as Redis Cluster requires); ops refer to keys by index. KEYS[1] is the checkpoint.
 * ARGV: expected checkpoint, new checkpoint, change-log retention, then per op:
 * code, key index, operand(s).
 */
export function encodePartitionWrite(
  write: PartitionWrite,
  checkpointKey: string,
  changeLogRetention: number,
): EncodedScriptCall {
  const keys = [checkpointKey];
  const indexOf = new Map<string, number>([[checkpointKey, 1]]);
  const keyIndex = (key: string): string => {
    let index = indexOf.get(key);
    if (index === undefined) {
      keys.push(key);
      index = keys.length;
      indexOf.set(key, index);
    }
    return String(index);
  };
  const args: (string | Buffer)[] = [
    write.expectedCheckpoint.toString(),
    write.newCheckpoint.toString(),
    String(changeLogRetention),
  ];
  for (const op of write.ops) {
    switch (op.op) {
      case 'set':
      case 'rpush':
        args.push(OP_CODES[op.op], keyIndex(op.key), op.value);
        break;
      case 'zadd':
      case 'zrem':
        args.push(OP_CODES[op.op], keyIndex(op.key), op.member);
        break;
      case 'xadd':
        args.push(OP_CODES.xadd, keyIndex(op.key), `${op.position}-0`, op.value);
        break;
      default: {
        const unreachable: never = op;
        throw new Error(`unknown write op ${JSON.stringify(unreachable)}`);
      }
    }
  }
  return { keys, args };
}
