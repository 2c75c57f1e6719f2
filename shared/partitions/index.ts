/**
 * How evaluations are spread over the read models' partitions (READ_MODEL_PARTITIONS): the
 * query side keeps each partition's keys under one hash tag, and the command side announces
 * each change on its partition's channel, which shares that tag. Both sides must therefore
 * agree on the count and on this function.
 */

/** 32-bit FNV-1a over the UTF-8 bytes: stable across processes, versions and platforms. */
export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** The partition an evaluation's read models and change announcements belong to. */
export function partitionOf(evalId: string, partitions: number): number {
  return partitions === 1 ? 0 : fnv1a32(evalId) % partitions;
}

/** The hash tag of partition `n` (every key and channel of the partition carries it), or a glob of every partition's. */
export function partitionTag(prefix: string, partition: number | '*'): string {
  return `{${prefix}:${partition}}`;
}
