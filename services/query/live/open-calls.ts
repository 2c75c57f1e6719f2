import { ResourceExhaustedError } from '../../../shared/errors';

/**
 * The long calls a replica holds open — streams and `min_position` waits — counted in all and
 * per client connection, each under a cap: every one holds buffers, a hub subscription and a
 * timer, and a client that opens them without end must not take the replica's memory. Past a
 * cap a call is RESOURCE_EXHAUSTED, naming the cap.
 */
export interface OpenCalls {
  /** Counts a call from `peer` in; throws ResourceExhaustedError past a cap. Returns its release. */
  open(peer: string, what: string): () => void;
  /** Calls open now (for tests and status). */
  readonly count: number;
}

export function createOpenCalls(limits: {
  readonly maxOpen: number;
  readonly maxOpenPerConnection: number;
}): OpenCalls {
  const perPeer = new Map<string, number>();
  let count = 0;
  return {
    open(peer, what) {
      const mine = perPeer.get(peer) ?? 0;
      if (count >= limits.maxOpen)
        throw new ResourceExhaustedError(
          `this replica holds ${count} streams and min_position waits, its limit (MAX_STREAMS): retry later or on another replica`,
        );
      if (mine >= limits.maxOpenPerConnection)
        throw new ResourceExhaustedError(
          `this connection holds ${mine} streams and min_position waits, the limit per connection ` +
            `(MAX_STREAMS_PER_CONNECTION), and asked for ${what}: close some, or open another connection`,
        );
      count += 1;
      perPeer.set(peer, mine + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        count -= 1;
        const left = (perPeer.get(peer) ?? 1) - 1;
        if (left === 0) perPeer.delete(peer);
        else perPeer.set(peer, left);
      };
    },
    get count() {
      return count;
    },
  };
}
