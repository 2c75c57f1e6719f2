/**
 * Per-partition checkpoints: the highest global position each partition has applied. They are
 * written only by the apply script, in the same atomic step as the data they cover. The read
 * models as a whole have reached the smallest of them.
 */
export interface Checkpoints {
  /** One per partition, in partition order (0 when a partition has none yet). */
  readAll(): Promise<bigint[]>;
  /** The checkpoint of the partition that holds `evalId`. */
  readFor(evalId: string): Promise<bigint>;
}

export function parseCheckpoint(value: string | null): bigint {
  return value === null ? 0n : BigInt(value);
}

export function minCheckpoint(checkpoints: readonly bigint[]): bigint {
  return checkpoints.reduce((min, c) => (c < min ? c : min), checkpoints[0] ?? 0n);
}
