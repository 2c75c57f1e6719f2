/**
 * A message with the bytes it is encoded as. The read models hold ts-proto-encoded messages,
 * and serving one used to mean decoding it, then encoding it again for the wire: once per call,
 * and once per stream for a change that 10,000 watchers receive. Readers hand out an Encoded
 * instead; the wire (wire/encoded-messages.ts) writes `bytes` as they are (a length-delimited
 * field is the same bytes whether encoded again or copied), and `message` is decoded only if
 * someone reads it.
 */
export interface Encoded<T> {
  readonly bytes: Uint8Array;
  /** Decoded on first use, then kept. */
  readonly message: T;
  /**
   * Why `bytes` would not decode in a client (wire/readability.ts), when they would not: an
   * entry an older version wrote, or a damaged one. `message` then holds only what was stored
   * beside the bytes (a change-log update: its position, revision, eval id and status).
   * Readers leave such a message out; a stream sends a progress marker at its position instead
   * (wire/encoded-messages.ts), so that the client's cursor still moves past it.
   */
  readonly unreadable?: string;
}

interface Codec<T> {
  decode(input: Uint8Array): T;
  encode(message: T): { finish(): Uint8Array };
}

class FromBytes<T> implements Encoded<T> {
  private decoded: T | undefined;

  constructor(
    readonly bytes: Uint8Array,
    private readonly codec: Pick<Codec<T>, 'decode'>,
  ) {}

  get message(): T {
    this.decoded ??= this.codec.decode(this.bytes);
    return this.decoded;
  }
}

/** The message stored as `bytes` (decoded lazily). */
export function fromBytes<T>(codec: Pick<Codec<T>, 'decode'>, bytes: Uint8Array): Encoded<T> {
  return new FromBytes(bytes, codec);
}

/** A message and its encoding, made once (a message that was not read from bytes). */
export function encodeOnce<T>(codec: Pick<Codec<T>, 'encode'>, message: T): Encoded<T> {
  return { bytes: codec.encode(message).finish(), message };
}

/** Bytes that would not decode in a client, with the stand-in `message` made of what is known of them. */
export function undecodable<T>(bytes: Uint8Array, message: T, reason: string): Encoded<T> {
  return { bytes, message, unreadable: reason };
}
