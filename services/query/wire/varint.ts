/** Protobuf varints of non-negative integers (up to 2^53), for the hand-written encoders. */

/** Bytes `value` takes as a varint. */
export function varintSize(value: number): number {
  let size = 1;
  while (value >= 128) {
    value = Math.floor(value / 128);
    size += 1;
  }
  return size;
}

/** Writes `value` as a varint at `at`; returns the position after it. */
export function writeVarintAt(buf: Buffer, at: number, value: number): number {
  while (value > 0x7fffffff) {
    buf[at++] = (value % 128) | 128;
    value = Math.floor(value / 128);
  }
  while (value >= 128) {
    buf[at++] = (value & 127) | 128;
    value >>>= 7;
  }
  buf[at++] = value;
  return at;
}
