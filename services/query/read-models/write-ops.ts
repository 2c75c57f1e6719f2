import { checkpointValue } from './checkpoints';
/**
 * The primitive writes a projection step makes to one partition. Each read model says which
 * ops an event causes; the projector collects them per partition and hands them, with the
 * checkpoint compare-and-set, to one atomic Lua script (redis/apply-script.ts).
 */
export type WriteOp =
  | { readonly op: 'set'; readonly key: string; readonly value: Buffer }
  | { readonly op: 'zadd'; readonly key: string; readonly member: string }
  | { readonly op: 'zrem'; readonly key: string; readonly member: string }
  /**
   * Puts `value` at list index `index` (0-based), dropping whatever the list held from there
   * on: an entry written again (a replay from a lost checkpoint, a repair) replaces itself
   * instead of being appended twice. Consecutive puts on a key extend the list.
   */
  | { readonly op: 'putAt'; readonly key: string; readonly index: number; readonly value: Buffer }
  /** Deletes the key (a terminal evaluation's history: read-models/evaluation-history.ts). */
  | { readonly op: 'del'; readonly key: string }
  /**
   * Sets the index's count (redis/index-counts.ts) to its size, after every other op: only a
   * write that made the whole index right may.
   */
  | { readonly op: 'recount'; readonly key: string }
  /**
   * Appends stream entry `<position>-0` with field `u` (the update) and, beside it, the
   * change's eval id `e`, status `s` and revision `r`; trimmed to the retention (MAXLEN ~).
   */
  | {
      readonly op: 'xadd';
      readonly key: string;
      readonly position: string;
      readonly value: Buffer;
      readonly meta: ChangeMeta;
    };

/** What the live path reads of a change without decoding its update (live/change.ts). */
export interface ChangeMeta {
  readonly evalId: string;
  readonly status: number;
  readonly revision: string;
}

/** Where a read model puts the ops an event causes. */
export interface WriteSink {
  set(key: string, value: Buffer): void;
  zadd(key: string, member: string): void;
  zrem(key: string, member: string): void;
  putAt(key: string, index: number, value: Buffer): void;
  del(key: string): void;
  recount(key: string): void;
  xadd(key: string, position: string, value: Buffer, meta: ChangeMeta): void;
}

/**
 * The ops of one partition write, merged per key as they come (see encodePartitionWrite for why
 * that leaves every key as the ops in order would): the projection's hot loop fills it directly,
 * without an object per op.
 */
export class WriteSet implements WriteSink {
  readonly sets = new Map<string, Buffer>();
  /** Per list, the index of its first value and the values, consecutive. */
  readonly lists = new Map<string, { readonly from: number; readonly values: Buffer[] }>();
  /** Per stream, STREAM_ITEMS items per entry (id, value, eval id, status, revision), in order. */
  readonly streams = new Map<string, (string | Buffer)[]>();
  /** Per sorted set, each member and whether the last op on it was a `zadd`. */
  readonly zsets = new Map<string, Map<string, boolean>>();
  /** Keys deleted (after every other op of the write: none of them touches one). */
  readonly dels = new Set<string>();
  /** Indexes whose counts are set to their size, last. */
  readonly recounts = new Set<string>();

  static of(ops: readonly WriteOp[]): WriteSet {
    const set = new WriteSet();
    for (const op of ops) {
      switch (op.op) {
        case 'set':
          set.set(op.key, op.value);
          break;
        case 'putAt':
          set.putAt(op.key, op.index, op.value);
          break;
        case 'del':
          set.del(op.key);
          break;
        case 'recount':
          set.recount(op.key);
          break;
        case 'xadd':
          set.xadd(op.key, op.position, op.value, op.meta);
          break;
        case 'zadd':
          set.zadd(op.key, op.member);
          break;
        case 'zrem':
          set.zrem(op.key, op.member);
          break;
        default: {
          const unreachable: never = op;
          throw new Error(`unknown write op ${JSON.stringify(unreachable)}`);
        }
      }
    }
    return set;
  }

  set(key: string, value: Buffer): void {
    this.sets.set(key, value);
  }

  putAt(key: string, index: number, value: Buffer): void {
    const list = this.lists.get(key);
    if (list === undefined) {
      this.lists.set(key, { from: index, values: [value] });
      return;
    }
    // A fold puts an evaluation's revisions in order; anything else is a bug, not a case to merge.
    if (index !== list.from + list.values.length)
      throw new Error(`list ${key}: put at ${index} does not follow ${list.from + list.values.length - 1}`);
    list.values.push(value);
  }

  /** Deletes `key`; puts on it before are dropped (the key ends deleted either way). */
  del(key: string): void {
    this.lists.delete(key);
    this.dels.add(key);
  }

  recount(key: string): void {
    this.recounts.add(key);
  }

  xadd(key: string, position: string, value: Buffer, meta: ChangeMeta): void {
    let entries = this.streams.get(key);
    if (entries === undefined) this.streams.set(key, (entries = []));
    entries.push(`${position}-0`, value, meta.evalId, String(meta.status), meta.revision);
  }

  zadd(key: string, member: string): void {
    this.member(key, member, true);
  }

  zrem(key: string, member: string): void {
    this.member(key, member, false);
  }

  /** The merged ops (stream entries, list appends, sorted-set changes, then sets). */
  toOps(): WriteOp[] {
    const ops: WriteOp[] = [];
    for (const [key, entries] of this.streams)
      for (let i = 0; i < entries.length; i += STREAM_ITEMS)
        ops.push({
          op: 'xadd',
          key,
          position: (entries[i] as string).slice(0, -2),
          value: entries[i + 1] as Buffer,
          meta: {
            evalId: entries[i + 2] as string,
            status: Number(entries[i + 3]),
            revision: entries[i + 4] as string,
          },
        });
    for (const [key, { from, values }] of this.lists)
      values.forEach((value, i) => ops.push({ op: 'putAt', key, index: from + i, value }));
    for (const [key, members] of this.zsets)
      for (const [member, present] of members) ops.push({ op: present ? 'zadd' : 'zrem', key, member });
    for (const [key, value] of this.sets) ops.push({ op: 'set', key, value });
    for (const key of this.dels) ops.push({ op: 'del', key });
    for (const key of this.recounts) ops.push({ op: 'recount', key });
    return ops;
  }

  private member(key: string, member: string, present: boolean): void {
    let members = this.zsets.get(key);
    if (members === undefined) this.zsets.set(key, (members = new Map<string, boolean>()));
    members.set(member, present);
  }
}

/** Items of one stream entry in WriteSet.streams and in the script's X op. */
export const STREAM_ITEMS = 5;

/** One partition's share of a projection step. */
export interface PartitionWrite {
  readonly partition: number;
  /** The checkpoint the partition must still have; the write is refused otherwise. */
  readonly expectedCheckpoint: bigint;
  readonly newCheckpoint: bigint;
  /**
   * eventMark() of the event at newCheckpoint, recorded with it (read-models/checkpoints.ts).
   * Undefined when the write leaves the checkpoint as it is (a repair: new = expected).
   */
  readonly checkpointEvent?: string;
  /** The ops, merged per key as the planner made them (`WriteSet.of` builds one from a list). */
  readonly ops: WriteSet;
  /**
   * Instead of the checkpoint: the write applies only if each of these keys still holds a
   * string whose SHA-1 (hex) is the one given — a write decided from those records alone (the
   * index repair), which a step that changes other evaluations must not refuse.
   */
  readonly ifUnchanged?: ReadonlyMap<string, string>;
}

export interface EncodedScriptCall {
  readonly keys: string[];
  readonly args: (string | Buffer)[];
}

/**
 * Most items one script op carries: the script spreads them onto the Lua stack (`unpack`),
 * which holds about 8,000 values.
 */
export const MAX_OP_ITEMS = 1000;

/** One item of the ops array: an op code, a key index or count, a member, id or value. */
type Item = string | Buffer | number;

/** The keys every partition write declares first: KEYS[1], KEYS[2] and KEYS[3] of the apply script. */
export interface PartitionKeys {
  readonly checkpoint: string;
  readonly fence: string;
  readonly counts: string;
}

/**
 * Encodes a partition write as the KEYS and ARGV of the apply script. Every key is declared in
 * KEYS (as Redis Cluster requires); ops refer to keys by index. KEYS[1] is the checkpoint,
 * KEYS[2] the fence. ARGV: expected checkpoint position, the new checkpoint value ('' to leave
 * it: a write that does not move it and names no event), change-log retention, the ops, and
 * the writer's fence token ('' for the live projection). The ops are packed into one
 * MessagePack array (see packItems): per script op, code, key index, item count, items (see
 * redis/apply-script.ts). One argument instead of several per event spares the client and
 * Redis the per-argument work of the protocol; the script unpacks it with `cmsgpack`.
 *
 * Ops on the same key are merged into variadic commands, which leaves every key as the ops
 * in order would: a list gets its values in order (cut, then RPUSH v1 v2 …), a stream its entries in
 * order, a string its last value, and a sorted set (every member has score 0) holds a member
 * exactly when the last op on it was a `zadd`. Ops on different keys commute, and a key only
 * ever sees one kind of op (each read-model key holds one Redis type).
 */
export function encodePartitionWrite(
  write: PartitionWrite,
  partitionKeys: PartitionKeys,
  changeLogRetention: number,
  fenceToken = '',
): EncodedScriptCall {
  const { keys, items } = scriptOps(write.ops, partitionKeys, write.ifUnchanged);
  const keeps = write.newCheckpoint === write.expectedCheckpoint && write.checkpointEvent === undefined;
  const newCheckpoint = keeps ? '' : checkpointValue(write.newCheckpoint, write.checkpointEvent);
  const expected = write.ifUnchanged === undefined ? write.expectedCheckpoint.toString() : '*';
  const args = [expected, newCheckpoint, String(changeLogRetention)];
  return { keys, args: [...args, packItems(items), fenceToken] };
}

/** The script ops for `ops`, as a flat item list (code, key index, count, items …), and KEYS. */
function scriptOps(
  ops: WriteSet,
  partitionKeys: PartitionKeys,
  ifUnchanged: ReadonlyMap<string, string> | undefined,
): { keys: string[]; items: Item[] } {
  const { sets, lists, streams, zsets, dels, recounts } = ops;
  const keys = [partitionKeys.checkpoint, partitionKeys.fence, partitionKeys.counts];
  const items: Item[] = [];
  const indexOf = new Map<string, number>([
    [partitionKeys.checkpoint, 1],
    [partitionKeys.fence, 2],
    [partitionKeys.counts, 3],
  ]);
  const declare = (key: string): number => {
    let index = indexOf.get(key);
    if (index === undefined) indexOf.set(key, (index = keys.push(key)));
    return index;
  };
  // The conditions first: the script checks them before it writes anything.
  if (ifUnchanged !== undefined && ifUnchanged.size > 0) {
    items.push('V', 1, ifUnchanged.size);
    for (const [key, digest] of ifUnchanged) items.push(declare(key), digest);
  }
  /** `perItem`: list entries per item (a stream entry is an id and a value). */
  const push = (code: string, key: string, list: readonly Item[], perItem = 1): void => {
    const index = declare(key);
    const step = MAX_OP_ITEMS * perItem;
    for (let from = 0; from < list.length; from += step) {
      const to = Math.min(list.length, from + step);
      items.push(code, index, (to - from) / perItem);
      for (let i = from; i < to; i += 1) items.push(list[i] as Item);
    }
  };
  for (const [key, entries] of streams) push('X', key, entries, STREAM_ITEMS);
  // A history entry is the same update as a change-log entry of the write: it is sent once,
  // and the list item refers to it by its (1-based) place in the array.
  const sent = new Map<Item, number>();
  items.forEach((item, i) => {
    if (Buffer.isBuffer(item)) sent.set(item, i + 1);
  });
  // A list op is its first index, then its values: the script cuts the list there first.
  for (const [key, { from, values }] of lists) {
    const index = declare(key);
    for (let start = 0; start < values.length; start += MAX_OP_ITEMS) {
      const chunk = values.slice(start, start + MAX_OP_ITEMS);
      items.push('L', index, chunk.length + 1, from + start);
      for (const value of chunk) items.push(sent.get(value) ?? value);
    }
  }
  for (const [key, members] of zsets) {
    const added: string[] = [];
    const removed: string[] = [];
    for (const [member, present] of members) (present ? added : removed).push(member);
    if (removed.length > 0) push('R', key, removed);
    if (added.length > 0) push('Z', key, added);
  }
  // Every record in one MSET (the same strings as a SET each, without a call per record):
  // code, a key index the op does not use, count, then key index and value per record.
  const records: Item[] = [];
  for (const [key, value] of sets) records.push(declare(key), value);
  for (let from = 0; from < records.length; from += 2 * MAX_OP_ITEMS) {
    const to = Math.min(records.length, from + 2 * MAX_OP_ITEMS);
    items.push('M', 1, (to - from) / 2);
    for (let i = from; i < to; i += 1) items.push(records[i] as Item);
  }
  for (const key of dels) items.push('D', declare(key), 0);
  for (const key of recounts) items.push('C', declare(key), 0);
  return { keys, items };
}

/**
 * Packs items as one MessagePack array (array 32 of str and uint 32), the subset Redis'
 * `cmsgpack.unpack` turns into a Lua table of strings (binary-safe) and numbers. Empty for no
 * items. Numbers are key indexes, counts, and references to an earlier item.
 */
function packItems(items: readonly Item[]): Buffer {
  if (items.length === 0) return Buffer.alloc(0);
  const lengths = new Array<number>(items.length);
  let size = 5;
  for (let i = 0; i < items.length; i += 1) {
    const item = items[i] as Item;
    if (typeof item === 'number') {
      if (!Number.isInteger(item) || item < 0 || item > 0xffffffff) throw new RangeError(`cannot pack ${item}`);
      size += 5;
      continue;
    }
    const length = typeof item === 'string' ? Buffer.byteLength(item) : item.length;
    lengths[i] = length;
    size += headerSize(length) + length;
  }
  const out = Buffer.allocUnsafe(size);
  out[0] = 0xdd;
  out.writeUInt32BE(items.length, 1);
  let pos = 5;
  for (let i = 0; i < items.length; i += 1) {
    const item = items[i] as Item;
    if (typeof item === 'number') {
      out[pos] = 0xce;
      out.writeUInt32BE(item, pos + 1);
      pos += 5;
      continue;
    }
    const length = lengths[i] as number;
    if (length < 32) out[pos++] = 0xa0 | length;
    else if (length < 0x100) {
      out[pos++] = 0xd9;
      out[pos++] = length;
    } else if (length < 0x10000) {
      out[pos++] = 0xda;
      pos = out.writeUInt16BE(length, pos);
    } else {
      out[pos++] = 0xdb;
      pos = out.writeUInt32BE(length, pos);
    }
    if (typeof item === 'string') pos += out.write(item, pos, 'utf8');
    else {
      out.set(item, pos);
      pos += length;
    }
  }
  return out;
}

function headerSize(length: number): number {
  return length < 32 ? 1 : length < 0x100 ? 2 : length < 0x10000 ? 3 : 5;
}
