/**
 * A number of bytes that the calls of one server share, granted first come, first served.
 * `shared/grpc/admission.ts` reserves a request's bytes here before grpc-js reads them.
 */
export interface ByteBudget {
  /**
   * Asks for `bytes`. They are granted in the order asked, as soon as they fit beside what is
   * granted already, or at once when nothing is: one reservation larger than the whole budget
   * still gets through, alone, so that no call can wait forever.
   */
  reserve(bytes: number): Reservation;
  /** Bytes granted and not given back yet. */
  readonly reserved: number;
  /** The most `reserved` has been since the budget was made. */
  readonly peakReserved: number;
  /** Reservations asked for and not granted yet. */
  readonly waiting: number;
}

export interface Reservation {
  /** Resolves once the bytes are granted; never, when the reservation is released before. */
  readonly admitted: Promise<void>;
  /** Lowers the reservation to `bytes` (granted or not); asking for more is ignored. */
  shrinkTo(bytes: number): void;
  /** Gives the bytes back, or leaves the queue unserved. Only the first call counts. */
  release(): void;
}

interface Entry {
  bytes: number;
  state: 'waiting' | 'granted' | 'released';
  grant: () => void;
}

export function createByteBudget(capacity: number): ByteBudget {
  let reserved = 0;
  let peakReserved = 0;
  // A Set keeps insertion order and deletes in O(1): a cancelled call leaves from the middle.
  const queue = new Set<Entry>();

  // Strictly in order: a later, smaller reservation does not pass one that does not fit yet,
  // or a stream of small ones could hold a large one back for good.
  const grantWhatFits = (): void => {
    for (const entry of queue) {
      if (reserved > 0 && reserved + entry.bytes > capacity) return;
      queue.delete(entry);
      entry.state = 'granted';
      reserved += entry.bytes;
      peakReserved = Math.max(peakReserved, reserved);
      // Resolving a promise runs nobody's code now: no one can release or reserve mid-loop.
      entry.grant();
    }
  };

  return {
    reserve(bytes) {
      let grant: () => void = () => undefined;
      const admitted = new Promise<void>((resolve) => (grant = resolve));
      const entry: Entry = { bytes, state: 'waiting', grant };
      queue.add(entry);
      grantWhatFits();
      return {
        admitted,
        shrinkTo(lower) {
          if (entry.state === 'released' || lower >= entry.bytes) return;
          if (entry.state === 'granted') reserved -= entry.bytes - lower;
          entry.bytes = lower;
          grantWhatFits();
        },
        release() {
          if (entry.state === 'released') return;
          if (entry.state === 'granted') reserved -= entry.bytes;
          else queue.delete(entry);
          entry.state = 'released';
          grantWhatFits();
        },
      };
    },
    get reserved() {
      return reserved;
    },
    get peakReserved() {
      return peakReserved;
    },
    get waiting() {
      return queue.size;
    },
  };
}
